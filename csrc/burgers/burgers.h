// burgers_loss_grad: entry checks shared by the CPU kernel and the CUDA binding.
#pragma once
#include "common/stencil.h"

namespace metaphys {

inline void check_burgers_inputs(const at::Tensor& v, const at::Tensor& v_old, const at::Tensor& mask,
                                 const at::Tensor& bc, const at::Tensor& mu, const at::Tensor& dt,
                                 int64_t stencil_size) {
  stencil::check_unknown(v, "v", 2);
  stencil::check_field(v, v_old, "v_old", 2);
  stencil::check_field(v, mask, "mask", 1);
  stencil::check_field(v, bc, "bc", 2);
  stencil::check_batch_param(v, mu, "mu");
  stencil::check_batch_param(v, dt, "dt");
  check_stencil(stencil_size);
}

}  // namespace metaphys
