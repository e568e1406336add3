// laplace_loss_grad, CUDA entry (compiled only in a CUDA build).
#include <torch/library.h>

#include "common/cuda_binding.h"
#include "laplace/laplace_args.h"
#include "laplace/laplace_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> laplace_loss_grad_cuda(const at::Tensor& u, const at::Tensor& mask,
                                                          const at::Tensor& bc, const at::Tensor& f,
                                                          int64_t stencil_size, bool true_grad) {
  return run_cuda("laplace_loss_grad", u, laplace_args(u, mask, bc, f, stencil_size, true_grad),
                  &laplace_cuda_scratch, &laplace_cuda_launch);
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("laplace_loss_grad", &metaphys::laplace_loss_grad_cuda); }
