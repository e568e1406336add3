// burgers_loss_grad, CUDA entry: checks, NaN-poisoned outputs, launch on the current stream.
// Compiled only in a CUDA build. mu/dt/mask values are validated by BurgersProblem (Python side)
// rather than here, which would cost a device->host sync per call.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "burgers/burgers.h"
#include "burgers/burgers_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> burgers_loss_grad_cuda(const at::Tensor& v, const at::Tensor& v_old,
                                                          const at::Tensor& mask, const at::Tensor& bc,
                                                          const at::Tensor& mu, const at::Tensor& dt,
                                                          int64_t stencil_size, bool true_grad) {
  check_burgers_inputs(v, v_old, mask, bc, mu, dt, stencil_size);
  stencil::check_cuda_launchable(v, "burgers_loss_grad");
  const c10::cuda::CUDAGuard guard(v.device());
  const int64_t N = v.size(0), H = v.size(2), W = v.size(3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor loss = at::full({N}, nan, v.options());
  at::Tensor grad = at::full_like(v, nan);
  if (N == 0 || H * W == 0) return {loss.zero_(), grad.zero_()};
  at::Tensor scratch = at::empty({burgers_cuda_scratch_doubles(N, H, W, true_grad)}, v.options());
  C10_CUDA_CHECK(burgers_cuda_launch(v.const_data_ptr<double>(), v_old.const_data_ptr<double>(),
                                     mask.const_data_ptr<double>(), bc.const_data_ptr<double>(),
                                     mu.const_data_ptr<double>(), dt.const_data_ptr<double>(),
                                     loss.mutable_data_ptr<double>(), grad.mutable_data_ptr<double>(),
                                     scratch.mutable_data_ptr<double>(), N, H, W, static_cast<int>(stencil_size),
                                     true_grad, c10::cuda::getCurrentCUDAStream(v.device().index()).stream()));
  return {loss, grad};
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("burgers_loss_grad", &metaphys::burgers_loss_grad_cuda); }
