// laplace_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the
// CUDA binding.
#pragma once
#include "common/checks.h"
#include "laplace/laplace_math.h"

namespace metaphys {

inline laplace::Args laplace_args(const at::Tensor& u, const at::Tensor& mask, const at::Tensor& bc,
                                  const at::Tensor& f, int64_t stencil, bool true_grad) {
  check_unknown(u, "u", 1, "the potential");
  check_field(u, mask, "mask", 1);
  check_field(u, bc, "bc", 1);
  check_field(u, f, "f", 1);
  laplace::Args g;
  static_cast<stencil::Grid&>(g) = checked_grid(u, stencil, true_grad);
  g.u = u.const_data_ptr<double>();
  g.mask = mask.const_data_ptr<double>();
  g.bc = bc.const_data_ptr<double>();
  g.f = f.const_data_ptr<double>();
  return g;
}

}  // namespace metaphys
