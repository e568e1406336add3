// wave_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the CUDA
// binding.
#pragma once
#include "common/checks.h"
#include "wave/wave_math.h"

namespace metaphys {

inline wave::Args wave_args(const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old,
                            const at::Tensor& mask, const at::Tensor& bc, const at::Tensor& c, const at::Tensor& dt,
                            int64_t stencil, bool true_grad) {
  wave::Args g;
  g.a = check_unknown(a, "a", 1, "the acceleration");
  g.x_old = check_field(a, x_old, "x_old", 1);
  g.v_old = check_field(a, v_old, "v_old", 1);
  g.mask = check_field(a, mask, "mask", 1);
  g.bc = check_field(a, bc, "bc", 1);
  g.c = check_per_sample(a, c, "c");
  g.dt = check_per_sample(a, dt, "dt");
  static_cast<stencil::Grid&>(g) = checked_grid(a, stencil, true_grad);
  return g;
}

}  // namespace metaphys
