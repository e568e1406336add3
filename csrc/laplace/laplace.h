// laplace_loss_grad: entry checks shared by the CPU kernel and the CUDA binding.
#pragma once
#include "common/stencil.h"

namespace metaphys {

inline void check_laplace_inputs(const at::Tensor& u, const at::Tensor& mask, const at::Tensor& bc,
                                 const at::Tensor& f, int64_t stencil_size) {
  stencil::check_unknown(u, "u", 1);
  stencil::check_field(u, mask, "mask", 1);
  stencil::check_field(u, bc, "bc", 1);
  stencil::check_field(u, f, "f", 1);
  check_stencil(stencil_size);
}

}  // namespace metaphys
