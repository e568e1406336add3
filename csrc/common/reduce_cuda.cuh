// Deterministic per-sample reductions of the CUDA kernels: every block of a Shape::grid() launch
// writes the sum of its cells to its own slot (block_sum + block_slot), then finish_sums runs one
// block per sample that adds the sample's slots in a fixed order and hands the sum to a small
// functor. No atomics, so results do not depend on scheduling, and every SM takes part in the
// first level whatever N is.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/launch_cuda.cuh"

namespace metaphys {
namespace cudak {

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the whole block (a multiple of 32 threads, at most 1024), valid in thread 0.
// Every thread of the block must call it; it may be called several times per kernel.
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
  __syncthreads();  // warp 0 has read warp_part before a next call overwrites it
  return v;
}

__device__ __forceinline__ bool is_block_leader() { return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0; }

// Slot of this block among the per-block partials of a Shape::grid() launch (sample-major).
__device__ __forceinline__ int64_t block_slot() {
  return (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
}

// Block-wide sum of each thread's contribution, stored in this block's slot.
__device__ __forceinline__ void store_block_partial(double contrib, double* __restrict__ partials) {
  const double s = block_sum(contrib);
  if (is_block_leader()) partials[block_slot()] = s;
}

// Per-block partial sums of value(n, i, j) over all cells (value: a __device__ functor).
template <class Value>
__global__ void cell_partials_kernel(Shape s, Value value, double* __restrict__ partials) {
  const Cell c = this_cell();
  store_block_partial(c.in(s.H, s.W) ? value(c.n, c.i, c.j) : 0.0, partials);
}

// One block per sample: fin(n, sum of the sample's per_sample partials, added in a fixed order).
template <class Fin>
__global__ void finish_sums_kernel(const double* __restrict__ partials, int64_t per_sample, Fin fin) {
  const int64_t n = blockIdx.x;
  double v = 0.0;
  for (int64_t k = threadIdx.x; k < per_sample; k += blockDim.x) v += partials[n * per_sample + k];
  const double s = block_sum(v);
  if (threadIdx.x == 0) fin(n, s);
}

template <class Value>
inline void launch_cell_partials(const Shape& s, Value value, double* partials, cudaStream_t stream) {
  cell_partials_kernel<<<s.grid(), s.block(), 0, stream>>>(s, value, partials);
}

template <class Fin>
inline void launch_finish_sums(const double* partials, const Shape& s, Fin fin, cudaStream_t stream) {
  finish_sums_kernel<<<static_cast<unsigned>(s.N), kThreads, 0, stream>>>(partials, s.blocks_per_sample(), fin);
}

// out[n] = sum
struct Store {
  double* out;
  __device__ void operator()(int64_t n, double s) const { out[n] = s; }
};

// ---- the grid ops' loss normalisation --------------------------------------------------------

// 1 - mask of a [N, 1, H, W] mask.
struct FreeCell {
  const double* mask;
  int H, W;
  __device__ double operator()(int64_t n, int i, int j) const {
    return 1.0 - mask[(n * H + i) * static_cast<int64_t>(W) + j];
  }
};
// count[n] = max(1, channels * sum)
struct ToCount {
  double channels;
  double* count;
  __device__ void operator()(int64_t n, double s) const {
    const double c = channels * s;
    count[n] = c > 1.0 ? c : 1.0;
  }
};
// loss[n] = sum / count[n]
struct DivideByCount {
  const double* count;
  double* loss;
  __device__ void operator()(int64_t n, double s) const { loss[n] = s / count[n]; }
};

// Scratch common to the grid ops: count[N] then partials[N * blocks_per_sample].
inline int64_t common_scratch_doubles(const Shape& s) { return s.N + s.N * s.blocks_per_sample(); }

// Loss denominators count[n] = max(1, channels * sum(free)) using `partials` as workspace.
inline void launch_free_counts(const double* mask, const Shape& s, double channels, double* partials, double* count,
                               cudaStream_t stream) {
  launch_cell_partials(s, FreeCell{mask, s.H, s.W}, partials, stream);
  launch_finish_sums(partials, s, ToCount{channels, count}, stream);
}

// loss[n] = (sum of the per-block partials of sample n) / count[n].
inline void launch_finish_loss(const double* partials, const double* count, const Shape& s, double* loss,
                               cudaStream_t stream) {
  launch_finish_sums(partials, s, DivideByCount{count, loss}, stream);
}

}  // namespace cudak
}  // namespace metaphys
