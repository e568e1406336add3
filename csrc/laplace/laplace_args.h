// laplace_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the
// CUDA binding.
#pragma once
#include "common/checks.h"
#include "laplace/laplace_math.h"

namespace metaphys {

inline laplace::Args laplace_args(const at::Tensor& u, const at::Tensor& mask, const at::Tensor& bc,
                                  const at::Tensor& f, int64_t stencil, bool true_grad) {
  laplace::Args g;
  g.u = check_unknown(u, "u", 1, "the potential");
  g.mask = check_field(u, mask, "mask", 1);
  g.bc = check_field(u, bc, "bc", 1);
  g.f = check_field(u, f, "f", 1);
  static_cast<stencil::Grid&>(g) = checked_grid(u, stencil, true_grad);
  return g;
}

}  // namespace metaphys
