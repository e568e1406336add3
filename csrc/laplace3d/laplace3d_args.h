// laplace3d_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the
// CUDA binding. The tensors are 5-D [N, 1, D, H, W]; the messages follow common/checks.h.
#pragma once
#include "common/checks.h"
#include "laplace3d/laplace3d_math.h"

namespace metaphys {

// A 5-D field [N, 1, D, H, W] matching the unknown u, on u's device.
inline const double* check_volume1(const at::Tensor& u, const at::Tensor& t, const char* name) {
  check_f64_contiguous(t, name);
  TORCH_CHECK(t.dim() == 5 && t.size(0) == u.size(0) && t.size(1) == 1 && t.size(2) == u.size(2) &&
                  t.size(3) == u.size(3) && t.size(4) == u.size(4),
              name, " must have shape [", u.size(0), ", 1, ", u.size(2), ", ", u.size(3), ", ", u.size(4), "], got ",
              t.sizes());
  check_same_device(u, t, name);
  return t.const_data_ptr<double>();
}

inline laplace3d::Args laplace3d_args(const at::Tensor& u, const at::Tensor& mask, const at::Tensor& bc,
                                      const at::Tensor& f, int64_t stencil, bool true_grad) {
  TORCH_CHECK(u.dim() == 5, "u must have 5 dimensions [N, 1, D, H, W], got shape ", u.sizes());
  check_f64_contiguous(u, "u");
  TORCH_CHECK(u.size(1) == 1, "u must have shape [N, 1, D, H, W] (1 channel: the potential), got ", u.sizes());
  TORCH_CHECK(stencil == 27 || stencil == 7, "stencil must be 27 (isotropic) or 7, got ", stencil);
  laplace3d::Args g{};
  g.u = u.const_data_ptr<double>();
  g.mask = check_volume1(u, mask, "mask");
  g.bc = check_volume1(u, bc, "bc");
  g.f = check_volume1(u, f, "f");
  g.N = u.size(0);
  g.D = u.size(2);
  g.H = u.size(3);
  g.W = u.size(4);
  g.stencil = static_cast<int>(stencil);
  g.true_grad = true_grad;
  return g;
}

}  // namespace metaphys
