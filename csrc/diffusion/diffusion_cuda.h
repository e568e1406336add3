// Host interface of the diffusion_loss_grad CUDA kernels (diffusion_cuda.cu, called by
// diffusion_cuda_binding.cpp). Raw device pointers: c, c_old, mask, bc, source [N, 1, H, W],
// vel [N, 2, H, W] (channel 0 = v_y, 1 = v_x), D and dt [N]; all contiguous float64.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace metaphys {

int64_t diffusion_cuda_scratch_doubles(int64_t N, int64_t H, int64_t W, bool true_grad);

cudaError_t diffusion_cuda_launch(const double* c, const double* c_old, const double* mask, const double* bc,
                                  const double* vel, const double* source, const double* D, const double* dt,
                                  double* loss, double* grad, double* scratch, int64_t N, int64_t H, int64_t W,
                                  int stencil, bool true_grad, cudaStream_t stream);

}  // namespace metaphys
