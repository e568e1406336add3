// fluid3d_loss_grad: argument checks and the Args fill (inputs only; the caller points the work volumes
// and the means), one function for the CPU kernel and the CUDA binding. The tensors are 5-D
// [N, C, D, H, W]; the messages follow common/checks.h.
#pragma once
#include "common/checks.h"
#include "fluid3d/fluid3d_math.h"

namespace metaphys {

// A 5-D field [N, c, D, H, W] matching the unknown u, on u's device.
inline const double* check_volume(const at::Tensor& u, const at::Tensor& t, const char* name, int64_t c) {
  check_f64_contiguous(t, name);
  TORCH_CHECK(t.dim() == 5 && t.size(0) == u.size(0) && t.size(1) == c && t.size(2) == u.size(2) &&
                  t.size(3) == u.size(3) && t.size(4) == u.size(4),
              name, " must have shape [", u.size(0), ", ", c, ", ", u.size(2), ", ", u.size(3), ", ", u.size(4),
              "], got ", t.sizes());
  check_same_device(u, t, name);
  return t.const_data_ptr<double>();
}

inline fluid3d::Args fluid3d_args(const at::Tensor& u, const at::Tensor& a_old, const at::Tensor& mask,
                                  const at::Tensor& bc, const at::Tensor& force, const at::Tensor& rho,
                                  const at::Tensor& mu, const at::Tensor& dt, double w_nav, double w_bound, double w_a,
                                  double w_p) {
  fluid3d::Args g{};
  TORCH_CHECK(u.dim() == 5, "u must have 5 dimensions [N, 4, D, H, W], got shape ", u.sizes());
  check_f64_contiguous(u, "u");
  TORCH_CHECK(u.size(1) == 4, "u must have shape [N, 4, D, H, W] (4 channels: a_z, a_y, a_x, p), got ", u.sizes());
  TORCH_CHECK(u.size(2) >= 3 && u.size(3) >= 3 && u.size(4) >= 3, "fluid3d grid must be at least 3x3x3, got ",
              u.size(2), "x", u.size(3), "x", u.size(4));
  g.u = u.const_data_ptr<double>();
  g.a_old = check_volume(u, a_old, "a_old", 3);
  g.mask = check_volume(u, mask, "mask", 1);
  g.bc = check_volume(u, bc, "bc", 3);
  g.force = check_volume(u, force, "force", 3);
  g.rho = check_per_sample(u, rho, "rho");
  g.mu = check_per_sample(u, mu, "mu");
  g.dt = check_per_sample(u, dt, "dt");
  g.w_nav = check_weight(w_nav, "w_nav");
  g.w_bound = check_weight(w_bound, "w_bound");
  g.w_a = check_weight(w_a, "w_a");
  g.w_p = check_weight(w_p, "w_p");
  g.N = u.size(0);
  g.D = u.size(2);
  g.H = u.size(3);
  g.W = u.size(4);
  return g;
}

}  // namespace metaphys
