// diffusion_loss_grad, CUDA entry: checks, NaN-poisoned outputs, launch on the current stream.
// Compiled only in a CUDA build. D/dt/mask values are validated by DiffusionProblem (Python side)
// rather than here, which would cost a device->host sync per call.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "diffusion/diffusion.h"
#include "diffusion/diffusion_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> diffusion_loss_grad_cuda(const at::Tensor& c, const at::Tensor& c_old,
                                                            const at::Tensor& mask, const at::Tensor& bc,
                                                            const at::Tensor& vel, const at::Tensor& source,
                                                            const at::Tensor& D, const at::Tensor& dt,
                                                            int64_t stencil_size, bool true_grad) {
  check_diffusion_inputs(c, c_old, mask, bc, vel, source, D, dt, stencil_size);
  stencil::check_cuda_launchable(c, "diffusion_loss_grad");
  const c10::cuda::CUDAGuard guard(c.device());
  const int64_t N = c.size(0), H = c.size(2), W = c.size(3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor loss = at::full({N}, nan, c.options());
  at::Tensor grad = at::full_like(c, nan);
  if (N == 0 || H * W == 0) return {loss.zero_(), grad.zero_()};
  at::Tensor scratch = at::empty({diffusion_cuda_scratch_doubles(N, H, W, true_grad)}, c.options());
  C10_CUDA_CHECK(diffusion_cuda_launch(
      c.const_data_ptr<double>(), c_old.const_data_ptr<double>(), mask.const_data_ptr<double>(),
      bc.const_data_ptr<double>(), vel.const_data_ptr<double>(), source.const_data_ptr<double>(),
      D.const_data_ptr<double>(), dt.const_data_ptr<double>(), loss.mutable_data_ptr<double>(),
      grad.mutable_data_ptr<double>(), scratch.mutable_data_ptr<double>(), N, H, W, static_cast<int>(stencil_size),
      true_grad, c10::cuda::getCurrentCUDAStream(c.device().index()).stream()));
  return {loss, grad};
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("diffusion_loss_grad", &metaphys::diffusion_loss_grad_cuda); }
