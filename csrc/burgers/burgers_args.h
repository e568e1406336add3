// burgers_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the
// CUDA binding.
#pragma once
#include "burgers/burgers_math.h"
#include "common/checks.h"

namespace metaphys {

inline burgers::Args burgers_args(const at::Tensor& v, const at::Tensor& v_old, const at::Tensor& mask,
                                  const at::Tensor& bc, const at::Tensor& mu, const at::Tensor& dt, int64_t stencil,
                                  bool true_grad) {
  burgers::Args g;
  g.v = check_unknown(v, "v", 2, "x- and y-velocity");
  g.v_old = check_field(v, v_old, "v_old", 2);
  g.mask = check_field(v, mask, "mask", 1);
  g.bc = check_field(v, bc, "bc", 2);
  g.mu = check_per_sample(v, mu, "mu");
  g.dt = check_per_sample(v, dt, "dt");
  static_cast<stencil::Grid&>(g) = checked_grid(v, stencil, true_grad);
  return g;
}

}  // namespace metaphys
