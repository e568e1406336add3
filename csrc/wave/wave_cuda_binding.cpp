// wave_loss_grad, CUDA entry (compiled only in a CUDA build). c/dt/mask values are validated by
// WaveProblem (Python side) rather than here, which would cost a device->host sync per call.
#include <torch/library.h>

#include "common/cuda_binding.h"
#include "wave/wave_args.h"
#include "wave/wave_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> wave_loss_grad_cuda(const at::Tensor& a, const at::Tensor& x_old,
                                                       const at::Tensor& v_old, const at::Tensor& mask,
                                                       const at::Tensor& bc, const at::Tensor& c,
                                                       const at::Tensor& dt, int64_t stencil_size, bool true_grad) {
  return run_cuda("wave_loss_grad", a, wave_args(a, x_old, v_old, mask, bc, c, dt, stencil_size, true_grad),
                  &wave_cuda_scratch, &wave_cuda_launch);
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("wave_loss_grad", &metaphys::wave_loss_grad_cuda); }
