// laplace_loss_grad, CUDA entry: checks, output allocation (poisoned with NaN so unwritten entries
// show), and the launch on the current stream. Compiled only in a CUDA build.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "laplace/laplace.h"
#include "laplace/laplace_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> laplace_loss_grad_cuda(const at::Tensor& u, const at::Tensor& mask,
                                                          const at::Tensor& bc, const at::Tensor& f,
                                                          int64_t stencil_size, bool true_grad) {
  check_laplace_inputs(u, mask, bc, f, stencil_size);
  stencil::check_cuda_launchable(u, "laplace_loss_grad");
  const c10::cuda::CUDAGuard guard(u.device());
  const int64_t N = u.size(0), H = u.size(2), W = u.size(3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor loss = at::full({N}, nan, u.options());
  at::Tensor grad = at::full_like(u, nan);
  if (N == 0 || H * W == 0) return {loss.zero_(), grad.zero_()};
  at::Tensor scratch = at::empty({laplace_cuda_scratch_doubles(N, H, W, true_grad)}, u.options());
  C10_CUDA_CHECK(laplace_cuda_launch(u.const_data_ptr<double>(), mask.const_data_ptr<double>(),
                                     bc.const_data_ptr<double>(), f.const_data_ptr<double>(),
                                     loss.mutable_data_ptr<double>(), grad.mutable_data_ptr<double>(),
                                     scratch.mutable_data_ptr<double>(), N, H, W, static_cast<int>(stencil_size),
                                     true_grad, c10::cuda::getCurrentCUDAStream(u.device().index()).stream()));
  return {loss, grad};
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("laplace_loss_grad", &metaphys::laplace_loss_grad_cuda); }
