// laplace3d_loss_grad, CUDA entry (compiled only in a CUDA build).
#include <torch/library.h>

#include "common/cuda_binding.h"
#include "laplace3d/laplace3d_args.h"
#include "laplace3d/laplace3d_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> laplace3d_loss_grad_cuda(const at::Tensor& u, const at::Tensor& mask,
                                                            const at::Tensor& bc, const at::Tensor& f,
                                                            int64_t stencil_size, bool true_grad) {
  const laplace3d::Args g = laplace3d_args(u, mask, bc, f, stencil_size, true_grad);
  // the kernels tile the D*H rows of a sample (8 per block in gridDim.y) with 32-bit row indices
  TORCH_CHECK(u.size(2) * u.size(3) <= 65535 * 8 && u.size(4) <= (int64_t{1} << 30),
              "laplace3d_loss_grad: grid too large for the CUDA kernel: ", u.size(2), " x ", u.size(3), " x ",
              u.size(4), " (D*H must be <= ", 65535 * 8, ")");
  return run_cuda("laplace3d_loss_grad", u, g, &laplace3d_cuda_scratch, &laplace3d_cuda_launch);
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("laplace3d_loss_grad", &metaphys::laplace3d_loss_grad_cuda); }
