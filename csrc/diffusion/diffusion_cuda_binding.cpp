// diffusion_loss_grad, CUDA entry (compiled only in a CUDA build). D/dt/mask values are validated by
// DiffusionProblem (Python side) rather than here, which would cost a device->host sync per call.
#include <torch/library.h>

#include "common/cuda_binding.h"
#include "diffusion/diffusion_args.h"
#include "diffusion/diffusion_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> diffusion_loss_grad_cuda(const at::Tensor& c, const at::Tensor& c_old,
                                                            const at::Tensor& mask, const at::Tensor& bc,
                                                            const at::Tensor& vel, const at::Tensor& source,
                                                            const at::Tensor& D, const at::Tensor& dt,
                                                            int64_t stencil_size, bool true_grad) {
  return run_cuda("diffusion_loss_grad", c,
                  diffusion_args(c, c_old, mask, bc, vel, source, D, dt, stencil_size, true_grad),
                  &diffusion_cuda_scratch, &diffusion_cuda_launch);
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("diffusion_loss_grad", &metaphys::diffusion_loss_grad_cuda); }
