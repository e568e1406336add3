// CUDA twin of workspace::zero_halo (common/workspace.h): zero only the one-cell halo of the
// padded [H+2, W+2] work planes; the passes write every interior entry before reading it.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/launch_cuda.cuh"

namespace metaphys {
namespace cudak {

// Border entry t of a padded plane: top row, bottom row, then left/right columns of rows 1..H.
// 64-bit: the border of a very wide grid exceeds the int range.
static __global__ void zero_halo_kernel(double* __restrict__ work, int64_t planes, int H, int W) {
  const int64_t Wp = static_cast<int64_t>(W) + 2, Hp = static_cast<int64_t>(H) + 2;
  const int64_t border = 2 * Wp + 2 * static_cast<int64_t>(H);
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= border) return;
  int64_t i, j;
  if (t < Wp) {
    i = 0, j = t;
  } else if (t < 2 * Wp) {
    i = Hp - 1, j = t - Wp;
  } else {
    const int64_t u = t - 2 * Wp;
    i = 1 + u / 2, j = (u % 2) ? Wp - 1 : 0;
  }
  const int64_t at = i * Wp + j;
  for (int64_t p = blockIdx.y; p < planes; p += gridDim.y) work[p * Hp * Wp + at] = 0.0;
}

inline void launch_zero_halo(double* work, int64_t planes, int H, int W, cudaStream_t stream) {
  const int64_t border = 2 * (static_cast<int64_t>(W) + 2) + 2 * static_cast<int64_t>(H);
  const unsigned ys = static_cast<unsigned>(planes < 65535 ? planes : 65535);
  zero_halo_kernel<<<dim3(blocks_for(border), ys), kThreads, 0, stream>>>(work, planes, H, W);
}

}  // namespace cudak
}  // namespace metaphys
