// Host interface of the diffusion_loss_grad CUDA kernels (diffusion_cuda.cu, plain CUDA C++), called
// through run_cuda (common/cuda_binding.h) by diffusion_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "diffusion/diffusion_math.h"

namespace metaphys {

int64_t diffusion_cuda_scratch(const diffusion::Args& g);
cudaError_t diffusion_cuda_launch(const diffusion::Args& g, double* loss, double* grad, double* scratch,
                                  cudaStream_t stream);

}  // namespace metaphys
