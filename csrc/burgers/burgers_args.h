// burgers_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the
// CUDA binding.
#pragma once
#include "burgers/burgers_math.h"
#include "common/checks.h"

namespace metaphys {

inline burgers::Args burgers_args(const at::Tensor& v, const at::Tensor& v_old, const at::Tensor& mask,
                                  const at::Tensor& bc, const at::Tensor& mu, const at::Tensor& dt, int64_t stencil,
                                  bool true_grad) {
  check_unknown(v, "v", 2, "x- and y-velocity");
  check_field(v, v_old, "v_old", 2);
  check_field(v, mask, "mask", 1);
  check_field(v, bc, "bc", 2);
  check_per_sample(v, mu, "mu");
  check_per_sample(v, dt, "dt");
  burgers::Args g;
  static_cast<stencil::Grid&>(g) = checked_grid(v, stencil, true_grad);
  g.v = v.const_data_ptr<double>();
  g.v_old = v_old.const_data_ptr<double>();
  g.mask = mask.const_data_ptr<double>();
  g.bc = bc.const_data_ptr<double>();
  g.mu = mu.const_data_ptr<double>();
  g.dt = dt.const_data_ptr<double>();
  return g;
}

}  // namespace metaphys
