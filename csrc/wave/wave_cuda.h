// Host interface of the wave_loss_grad CUDA kernels (wave_cuda.cu, called by wave_cuda_binding.cpp).
// Raw device pointers: a, x_old, v_old, mask, bc [N, 1, H, W]; c and dt [N]; contiguous float64.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace metaphys {

int64_t wave_cuda_scratch_doubles(int64_t N, int64_t H, int64_t W, bool true_grad);

cudaError_t wave_cuda_launch(const double* a, const double* x_old, const double* v_old, const double* mask,
                             const double* bc, const double* c, const double* dt, double* loss, double* grad,
                             double* scratch, int64_t N, int64_t H, int64_t W, int stencil, bool true_grad,
                             cudaStream_t stream);

}  // namespace metaphys
