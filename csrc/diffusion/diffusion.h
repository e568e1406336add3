// diffusion_loss_grad: entry checks shared by the CPU kernel and the CUDA binding.
#pragma once
#include "common/stencil.h"

namespace metaphys {

inline void check_diffusion_inputs(const at::Tensor& c, const at::Tensor& c_old, const at::Tensor& mask,
                                   const at::Tensor& bc, const at::Tensor& vel, const at::Tensor& source,
                                   const at::Tensor& D, const at::Tensor& dt, int64_t stencil_size) {
  stencil::check_unknown(c, "c", 1);
  stencil::check_field(c, c_old, "c_old", 1);
  stencil::check_field(c, mask, "mask", 1);
  stencil::check_field(c, bc, "bc", 1);
  stencil::check_field(c, vel, "vel", 2);
  stencil::check_field(c, source, "source", 1);
  stencil::check_batch_param(c, D, "D");
  stencil::check_batch_param(c, dt, "dt");
  check_stencil(stencil_size);
}

}  // namespace metaphys
