// Host interface of the burgers_loss_grad CUDA kernels (burgers_cuda.cu, plain CUDA C++), called
// through run_cuda (common/cuda_binding.h) by burgers_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "burgers/burgers_math.h"

namespace metaphys {

int64_t burgers_cuda_scratch(const burgers::Args& g);
cudaError_t burgers_cuda_launch(const burgers::Args& g, double* loss, double* grad, double* scratch,
                                cudaStream_t stream);

}  // namespace metaphys
