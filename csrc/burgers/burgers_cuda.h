// Host interface of the burgers_loss_grad CUDA kernels (burgers_cuda.cu, called by
// burgers_cuda_binding.cpp). Raw device pointers: v, v_old, bc [N, 2, H, W], mask [N, 1, H, W],
// mu and dt [N]; contiguous float64.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace metaphys {

int64_t burgers_cuda_scratch_doubles(int64_t N, int64_t H, int64_t W, bool true_grad);

cudaError_t burgers_cuda_launch(const double* v, const double* v_old, const double* mask, const double* bc,
                                const double* mu, const double* dt, double* loss, double* grad, double* scratch,
                                int64_t N, int64_t H, int64_t W, int stencil, bool true_grad, cudaStream_t stream);

}  // namespace metaphys
