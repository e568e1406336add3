// Host interface of the laplace_loss_grad CUDA kernels (implemented in laplace_cuda.cu, called by
// laplace_cuda_binding.cpp). Raw device pointers to contiguous float64 [N, 1, H, W] fields.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace metaphys {

// Number of float64 scratch values the launcher needs.
int64_t laplace_cuda_scratch_doubles(int64_t N, int64_t H, int64_t W, bool true_grad);

// Writes loss[N] and grad[N, 1, H, W]; returns the launch status (cudaGetLastError).
cudaError_t laplace_cuda_launch(const double* u, const double* mask, const double* bc, const double* f, double* loss,
                                double* grad, double* scratch, int64_t N, int64_t H, int64_t W, int stencil,
                                bool true_grad, cudaStream_t stream);

}  // namespace metaphys
