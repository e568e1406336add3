// burgers_loss_grad, CUDA entry (compiled only in a CUDA build). mu/dt/mask values are validated by
// BurgersProblem (Python side) rather than here, which would cost a device->host sync per call.
#include <torch/library.h>

#include "burgers/burgers_args.h"
#include "burgers/burgers_cuda.h"
#include "common/cuda_binding.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> burgers_loss_grad_cuda(const at::Tensor& v, const at::Tensor& v_old,
                                                          const at::Tensor& mask, const at::Tensor& bc,
                                                          const at::Tensor& mu, const at::Tensor& dt,
                                                          int64_t stencil_size, bool true_grad) {
  return run_cuda("burgers_loss_grad", v, burgers_args(v, v_old, mask, bc, mu, dt, stencil_size, true_grad),
                  &burgers_cuda_scratch, &burgers_cuda_launch);
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("burgers_loss_grad", &metaphys::burgers_loss_grad_cuda); }
