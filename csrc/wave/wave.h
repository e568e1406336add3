// wave_loss_grad: entry checks shared by the CPU kernel and the CUDA binding.
#pragma once
#include "common/stencil.h"

namespace metaphys {

inline void check_wave_inputs(const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old,
                              const at::Tensor& mask, const at::Tensor& bc, const at::Tensor& c,
                              const at::Tensor& dt, int64_t stencil_size) {
  stencil::check_unknown(a, "a", 1);
  stencil::check_field(a, x_old, "x_old", 1);
  stencil::check_field(a, v_old, "v_old", 1);
  stencil::check_field(a, mask, "mask", 1);
  stencil::check_field(a, bc, "bc", 1);
  stencil::check_batch_param(a, c, "c");
  stencil::check_batch_param(a, dt, "dt");
  check_stencil(stencil_size);
}

}  // namespace metaphys
