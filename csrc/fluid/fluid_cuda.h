// Host interface of the fluid_loss_grad CUDA kernels (fluid_cuda.cu, plain CUDA C++), called
// through run_cuda (common/cuda_binding.h) by fluid_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "fluid/fluid_math.h"

namespace metaphys {

// g: the inputs (fluid_args); the launcher points the work planes and means into `scratch`.
int64_t fluid_cuda_scratch(const fluid::Args& g);
cudaError_t fluid_cuda_launch(const fluid::Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream);

}  // namespace metaphys
