// fluid3d_loss_grad, CUDA entry (compiled only in a CUDA build).
#include <torch/library.h>

#include "common/cuda_binding.h"
#include "fluid3d/fluid3d_args.h"
#include "fluid3d/fluid3d_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> fluid3d_loss_grad_cuda(const at::Tensor& u, const at::Tensor& a_old,
                                                         const at::Tensor& mask, const at::Tensor& bc,
                                                         const at::Tensor& force, const at::Tensor& rho,
                                                         const at::Tensor& mu, const at::Tensor& dt, double w_nav,
                                                         double w_bound, double w_a, double w_p) {
  const fluid3d::Args g = fluid3d_args(u, a_old, mask, bc, force, rho, mu, dt, w_nav, w_bound, w_a, w_p);
  // the kernels tile the D*H rows of a sample (8 per block in gridDim.y) with 32-bit row indices
  TORCH_CHECK(u.size(2) * u.size(3) <= 65535 * 8 && u.size(4) <= (int64_t{1} << 30),
              "fluid3d_loss_grad: grid too large for the CUDA kernel: ", u.size(2), " x ", u.size(3), " x ",
              u.size(4), " (D*H must be <= ", 65535 * 8, ")");
  return run_cuda("fluid3d_loss_grad", u, g, &fluid3d_cuda_scratch, &fluid3d_cuda_launch);
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("fluid3d_loss_grad", &metaphys::fluid3d_loss_grad_cuda); }
