// Host interface of the cloth_loss_grad CUDA kernels (cloth_cuda.cu, plain CUDA C++), called
// through run_cuda (common/cuda_binding.h) by cloth_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cloth/cloth_math.h"

namespace metaphys {

// g: the inputs (cloth_args); the launcher points the work planes into `scratch`.
int64_t cloth_cuda_scratch(const cloth::Args& g);
cudaError_t cloth_cuda_launch(const cloth::Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream);

}  // namespace metaphys
