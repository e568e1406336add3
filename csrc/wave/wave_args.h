// wave_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the CUDA
// binding.
#pragma once
#include "common/checks.h"
#include "wave/wave_math.h"

namespace metaphys {

inline wave::Args wave_args(const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old,
                            const at::Tensor& mask, const at::Tensor& bc, const at::Tensor& c, const at::Tensor& dt,
                            int64_t stencil, bool true_grad) {
  check_unknown(a, "a", 1, "the acceleration");
  check_field(a, x_old, "x_old", 1);
  check_field(a, v_old, "v_old", 1);
  check_field(a, mask, "mask", 1);
  check_field(a, bc, "bc", 1);
  check_per_sample(a, c, "c");
  check_per_sample(a, dt, "dt");
  wave::Args g;
  static_cast<stencil::Grid&>(g) = checked_grid(a, stencil, true_grad);
  g.a = a.const_data_ptr<double>();
  g.x_old = x_old.const_data_ptr<double>();
  g.v_old = v_old.const_data_ptr<double>();
  g.mask = mask.const_data_ptr<double>();
  g.bc = bc.const_data_ptr<double>();
  g.c = c.const_data_ptr<double>();
  g.dt = dt.const_data_ptr<double>();
  return g;
}

}  // namespace metaphys
