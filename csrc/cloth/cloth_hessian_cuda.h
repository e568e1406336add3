// Host interface of the cloth_hessian CUDA kernels (cloth_hessian_cuda.cu, plain CUDA C++), called by
// cloth_hessian_cuda_binding.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cloth/cloth_hessian_math.h"

namespace metaphys {

// h: the inputs (cloth_args) and project; the launcher points h.work into `scratch`
// (cloth_hessian_cuda_scratch(h) doubles) and h.blocks to `blocks` [N, 13, 3, 3, H, W].
int64_t cloth_hessian_cuda_scratch(const cloth::HArgs& h);
cudaError_t cloth_hessian_cuda_launch(const cloth::HArgs& h, double* blocks, double* scratch, cudaStream_t stream);

}  // namespace metaphys
