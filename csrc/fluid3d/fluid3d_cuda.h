// Host interface of the fluid3d_loss_grad CUDA kernels (fluid3d_cuda.cu, plain CUDA C++), called
// through run_cuda (common/cuda_binding.h) by fluid3d_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "fluid3d/fluid3d_math.h"

namespace metaphys {

// g: the inputs (fluid3d_args); the launcher points the work volumes and means into `scratch`.
int64_t fluid3d_cuda_scratch(const fluid3d::Args& g);
cudaError_t fluid3d_cuda_launch(const fluid3d::Args& g, double* loss, double* grad, double* scratch,
                                cudaStream_t stream);

}  // namespace metaphys
