// Host interface of the laplace_loss_grad CUDA kernels (laplace_cuda.cu, plain CUDA C++), called
// through run_cuda (common/cuda_binding.h) by laplace_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "laplace/laplace_math.h"

namespace metaphys {

int64_t laplace_cuda_scratch(const laplace::Args& g);
cudaError_t laplace_cuda_launch(const laplace::Args& g, double* loss, double* grad, double* scratch,
                                cudaStream_t stream);

}  // namespace metaphys
