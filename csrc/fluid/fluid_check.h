// Entry checks of metaphys::fluid_loss_grad shared by the CPU and CUDA bindings (ATen side).
#pragma once
#include <cmath>

#include "common/checks.h"

namespace metaphys {

inline void check_fluid_args(const at::Tensor& u, const at::Tensor& a_old, const at::Tensor& mask,
                             const at::Tensor& bc, const at::Tensor& force, const at::Tensor& rho,
                             const at::Tensor& mu, const at::Tensor& dt, double w_nav, double w_bound, double w_a,
                             double w_p) {
  check_f64_contig(u, "u");
  TORCH_CHECK(u.dim() == 4 && u.size(1) == 2, "u must have shape [N, 2, H, W] (channels: vector potential a, "
              "pressure p), got ", u.sizes());
  const int64_t n = u.size(0), h = u.size(2), w = u.size(3);
  TORCH_CHECK(h >= 3 && w >= 3, "fluid grid must be at least 3x3, got ", h, "x", w);
  check_shape4(a_old, "a_old", n, 1, h, w);
  check_shape4(mask, "mask", n, 1, h, w);
  check_shape4(bc, "bc", n, 2, h, w);
  check_shape4(force, "force", n, 2, h, w);
  check_param(rho, "rho", n);
  check_param(mu, "mu", n);
  check_param(dt, "dt", n);
  const at::Tensor* all[] = {&a_old, &mask, &bc, &force, &rho, &mu, &dt};
  const char* names[] = {"a_old", "mask", "bc", "force", "rho", "mu", "dt"};
  for (int k = 0; k < 7; ++k) check_same_device(u, *all[k], names[k]);
  const double ws[] = {w_nav, w_bound, w_a, w_p};
  const char* wn[] = {"w_nav", "w_bound", "w_a", "w_p"};
  for (int k = 0; k < 4; ++k)
    TORCH_CHECK(std::isfinite(ws[k]) && ws[k] >= 0.0, wn[k], " must be a finite number >= 0, got ", ws[k]);
}

}  // namespace metaphys
