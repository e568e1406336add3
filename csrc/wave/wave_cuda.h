// Host interface of the wave_loss_grad CUDA kernels (wave_cuda.cu, plain CUDA C++), called through
// run_cuda (common/cuda_binding.h) by wave_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "wave/wave_math.h"

namespace metaphys {

int64_t wave_cuda_scratch(const wave::Args& g);
cudaError_t wave_cuda_launch(const wave::Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream);

}  // namespace metaphys
