// wave_loss_grad, CUDA entry: checks, NaN-poisoned outputs, launch on the current stream.
// Compiled only in a CUDA build. c/dt/mask values are validated by WaveProblem (Python side)
// rather than here, which would cost a device->host sync per call.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "wave/wave.h"
#include "wave/wave_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> wave_loss_grad_cuda(const at::Tensor& a, const at::Tensor& x_old,
                                                       const at::Tensor& v_old, const at::Tensor& mask,
                                                       const at::Tensor& bc, const at::Tensor& c,
                                                       const at::Tensor& dt, int64_t stencil_size, bool true_grad) {
  check_wave_inputs(a, x_old, v_old, mask, bc, c, dt, stencil_size);
  stencil::check_cuda_launchable(a, "wave_loss_grad");
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t N = a.size(0), H = a.size(2), W = a.size(3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor loss = at::full({N}, nan, a.options());
  at::Tensor grad = at::full_like(a, nan);
  if (N == 0 || H * W == 0) return {loss.zero_(), grad.zero_()};
  at::Tensor scratch = at::empty({wave_cuda_scratch_doubles(N, H, W, true_grad)}, a.options());
  C10_CUDA_CHECK(wave_cuda_launch(a.const_data_ptr<double>(), x_old.const_data_ptr<double>(),
                                  v_old.const_data_ptr<double>(), mask.const_data_ptr<double>(),
                                  bc.const_data_ptr<double>(), c.const_data_ptr<double>(), dt.const_data_ptr<double>(),
                                  loss.mutable_data_ptr<double>(), grad.mutable_data_ptr<double>(),
                                  scratch.mutable_data_ptr<double>(), N, H, W, static_cast<int>(stencil_size),
                                  true_grad, c10::cuda::getCurrentCUDAStream(a.device().index()).stream()));
  return {loss, grad};
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("wave_loss_grad", &metaphys::wave_loss_grad_cuda); }
