// The ATen side of every CUDA op (compiled only in a CUDA build, from csrc/<op>/<op>_cuda_binding.cpp):
// device guard, outputs poisoned with NaN (an element a kernel fails to write shows up), one
// scratch buffer, the launch on the current torch stream and the one CUDA error check.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>
#include <tuple>

#include "common/checks.h"

namespace metaphys {

// Every op's CUDA launcher: writes loss [N] and grad (shaped like the unknown) from the Args its
// <op>_args function filled, using `scratch` (scratch_doubles(g) doubles) as workspace.
template <class Args>
using CudaLaunch = cudaError_t (*)(const Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream);
template <class Args>
using CudaScratch = int64_t (*)(const Args& g);

// Runs `launch` for the unknown u (already checked by the op's <op>_args).
template <class Args>
std::tuple<at::Tensor, at::Tensor> run_cuda(const char* op, const at::Tensor& u, const Args& g,
                                            CudaScratch<Args> scratch_doubles, CudaLaunch<Args> launch) {
  check_cuda_launchable(u, op);
  const c10::cuda::CUDAGuard guard(u.device());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor loss = at::full({u.size(0)}, nan, u.options());
  at::Tensor grad = at::full_like(u, nan);
  if (u.numel() == 0) return {loss.zero_(), grad.zero_()};
  at::Tensor scratch = at::empty({scratch_doubles(g)}, u.options());
  C10_CUDA_CHECK(launch(g, loss.mutable_data_ptr<double>(), grad.mutable_data_ptr<double>(),
                        scratch.mutable_data_ptr<double>(),
                        c10::cuda::getCurrentCUDAStream(u.device().index()).stream()));
  return {loss, grad};
}

}  // namespace metaphys
