// Shared device-side building blocks of the grid ops' CUDA kernels (plain CUDA C++, no ATen):
// the same stencils as csrc/common/stencil.h (9/5-point Laplacian, central differences, zero or
// periodic padding), the launch shape (one thread per cell, blockIdx.z = sample), a deterministic
// block reduction, and the small kernels that turn per-block partial sums into per-sample
// free-cell counts and losses.
//
// Reductions never use atomics: every block writes its partial sum to its own slot, then one block
// per sample sums its slots in a fixed order, so results do not depend on scheduling.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace metaphys {
namespace cudak {

constexpr int kTileX = 32;  // threads along a row (columns j)
constexpr int kTileY = 8;   // threads along a column (rows i)
constexpr int kReduceThreads = 256;
constexpr int64_t kMaxSamples = 65535;  // gridDim.z limit

// Launch geometry of a per-cell kernel over N planes of H x W.
struct Shape {
  int64_t N;
  int H;
  int W;
  int64_t plane() const { return static_cast<int64_t>(H) * W; }
  dim3 grid() const {
    return dim3(static_cast<unsigned>((W + kTileX - 1) / kTileX), static_cast<unsigned>((H + kTileY - 1) / kTileY),
                static_cast<unsigned>(N));
  }
  dim3 block() const { return dim3(kTileX, kTileY, 1); }
  int64_t blocks_per_sample() const {
    return static_cast<int64_t>((W + kTileX - 1) / kTileX) * ((H + kTileY - 1) / kTileY);
  }
};

// Scratch space common to all grid ops: count[N] then partials[N * blocks_per_sample].
inline int64_t common_scratch_doubles(const Shape& s) { return s.N + s.N * s.blocks_per_sample(); }

// ---------------------------------------------------------------------------------------------
// Stencils. `f(i, j)` returns a field value at an in-range cell; `at` applies the padding rule.
template <int S>
__host__ __device__ constexpr double centre() {
  return S == 9 ? -3.0 : -4.0;
}

__device__ __forceinline__ int wrap(int k, int n) {
  k %= n;
  return k < 0 ? k + n : k;
}

template <bool Periodic, class F>
__device__ __forceinline__ double at(const F& f, int i, int j, int H, int W) {
  if constexpr (Periodic) {
    return f(wrap(i, H), wrap(j, W));
  } else {
    return (i >= 0 && i < H && j >= 0 && j < W) ? f(i, j) : 0.0;
  }
}

// Neighbour part of the Laplacian (everything but the centre term), in the CPU/twin order.
template <int S, bool Periodic, class F>
__device__ __forceinline__ double around(const F& f, int i, int j, int H, int W) {
  const double axis = at<Periodic>(f, i - 1, j, H, W) + at<Periodic>(f, i + 1, j, H, W) +
                      at<Periodic>(f, i, j - 1, H, W) + at<Periodic>(f, i, j + 1, H, W);
  if constexpr (S == 9) {
    const double diag = at<Periodic>(f, i - 1, j - 1, H, W) + at<Periodic>(f, i - 1, j + 1, H, W) +
                        at<Periodic>(f, i + 1, j - 1, H, W) + at<Periodic>(f, i + 1, j + 1, H, W);
    return 0.25 * diag + 0.5 * axis;
  } else {
    return axis;
  }
}

template <int S, bool Periodic, class F>
__device__ __forceinline__ double laplacian(const F& f, int i, int j, int H, int W) {
  return around<S, Periodic>(f, i, j, H, W) + centre<S>() * f(i, j);
}

template <bool Periodic, class F>
__device__ __forceinline__ double dx_c(const F& f, int i, int j, int H, int W) {
  return 0.5 * (at<Periodic>(f, i, j + 1, H, W) - at<Periodic>(f, i, j - 1, H, W));
}

template <bool Periodic, class F>
__device__ __forceinline__ double dy_c(const F& f, int i, int j, int H, int W) {
  return 0.5 * (at<Periodic>(f, i + 1, j, H, W) - at<Periodic>(f, i - 1, j, H, W));
}

// ---------------------------------------------------------------------------------------------
// Reductions.
__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the whole block (a multiple of 32 threads, at most 1024); valid in thread 0.
// Call once per kernel, from every thread of the block.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_part[32];
  const int t = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
  const int nthreads = static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
  const int lane = t & 31, warp = t >> 5;
  v = warp_sum(v);
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = (t < ((nthreads + 31) >> 5)) ? warp_part[t] : 0.0;
    v = warp_sum(v);
  }
  return v;
}

__device__ __forceinline__ bool is_block_leader() { return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0; }

// Slot of this block among the per-block partials of a Shape::grid() launch.
__device__ __forceinline__ int64_t block_slot() {
  return (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
}

// Per-block partial sums of (1 - mask) over a [N, 1, H, W] mask.
template <typename T>
__global__ void free_count_partials_kernel(const T* __restrict__ mask, int H, int W, T* __restrict__ partials) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  T v = 0;
  if (i < H && j < W) v = T(1) - mask[static_cast<int64_t>(blockIdx.z) * H * W + static_cast<int64_t>(i) * W + j];
  const T s = block_sum(v);
  if (is_block_leader()) partials[block_slot()] = s;
}

// One block per sample: out[n] = sum of its partials in a fixed order, then
// mode 0: out[n] = max(1, channels * sum) (loss denominators); mode 1: out[n] = sum / count[n].
template <typename T>
__global__ void finish_sums_kernel(const T* __restrict__ partials, int64_t per_sample, T channels,
                                   const T* __restrict__ count, T* __restrict__ out, int mode) {
  const int64_t n = blockIdx.x;
  T v = 0;
  for (int64_t k = threadIdx.x; k < per_sample; k += blockDim.x) v += partials[n * per_sample + k];
  const T s = block_sum(v);
  if (threadIdx.x == 0) {
    if (mode == 0) {
      const T c = channels * s;
      out[n] = c > T(1) ? c : T(1);
    } else {
      out[n] = s / count[n];
    }
  }
}

// Loss denominators count[n] = max(1, channels * sum(free)) using `partials` as workspace.
inline void launch_free_counts(const double* mask, const Shape& s, double channels, double* partials, double* count,
                               cudaStream_t stream) {
  free_count_partials_kernel<double><<<s.grid(), s.block(), 0, stream>>>(mask, s.H, s.W, partials);
  finish_sums_kernel<double><<<static_cast<unsigned>(s.N), kReduceThreads, 0, stream>>>(
      partials, s.blocks_per_sample(), channels, nullptr, count, 0);
}

// loss[n] = (sum of the per-block partials of sample n) / count[n].
inline void launch_finish_loss(const double* partials, const double* count, const Shape& s, double* loss,
                               cudaStream_t stream) {
  finish_sums_kernel<double><<<static_cast<unsigned>(s.N), kReduceThreads, 0, stream>>>(
      partials, s.blocks_per_sample(), 1.0, count, loss, 1);
}

}  // namespace cudak
}  // namespace metaphys
