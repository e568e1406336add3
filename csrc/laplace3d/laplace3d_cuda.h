// Host interface of the laplace3d_loss_grad CUDA kernels (laplace3d_cuda.cu, plain CUDA C++), called
// through run_cuda (common/cuda_binding.h) by laplace3d_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "laplace3d/laplace3d_math.h"

namespace metaphys {

int64_t laplace3d_cuda_scratch(const laplace3d::Args& g);
cudaError_t laplace3d_cuda_launch(const laplace3d::Args& g, double* loss, double* grad, double* scratch,
                                  cudaStream_t stream);

}  // namespace metaphys
