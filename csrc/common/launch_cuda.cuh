// The one launch shape of the CUDA kernels (plain CUDA C++, no ATen): one thread per cell in
// 32 x 8 tiles, gridDim.z = sample, so a thread finds its cell without any division. The limits
// this implies (N <= 65535, H <= 8 * 65535) are checked by check_cuda_launchable (common/checks.h).
// The stream is the current torch stream, chosen by run_cuda (common/cuda_binding.h).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace metaphys {
namespace cudak {

constexpr int kTileX = 32;  // threads along a row (columns j)
constexpr int kTileY = 8;   // threads along a column (rows i)
constexpr int kThreads = 256;

// Launch geometry of a per-cell kernel over N planes of H x W.
struct Shape {
  int64_t N;
  int H;
  int W;
  __host__ __device__ int64_t plane() const { return static_cast<int64_t>(H) * W; }
  dim3 grid() const {
    return dim3(static_cast<unsigned>((W + kTileX - 1) / kTileX), static_cast<unsigned>((H + kTileY - 1) / kTileY),
                static_cast<unsigned>(N));
  }
  dim3 block() const { return dim3(kTileX, kTileY, 1); }
  int64_t blocks_per_sample() const {
    return static_cast<int64_t>((W + kTileX - 1) / kTileX) * ((H + kTileY - 1) / kTileY);
  }
};

inline Shape shape_of(int64_t N, int64_t H, int64_t W) {
  return Shape{N, static_cast<int>(H), static_cast<int>(W)};
}

// Blocks of `threads` threads that cover `count` elements of a 1-D launch.
inline unsigned blocks_for(int64_t count, int threads = kThreads) {
  return static_cast<unsigned>((count + threads - 1) / threads);
}

// The cell of this thread in a Shape::grid() launch; in() is false for the padding threads of
// the last tiles (they must still reach any block-wide reduction).
struct Cell {
  int64_t n;
  int i;
  int j;
  __device__ bool in(int H, int W) const { return i < H && j < W; }
};
__device__ __forceinline__ Cell this_cell() {
  return Cell{static_cast<int64_t>(blockIdx.z), static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y),
              static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x)};
}

}  // namespace cudak
}  // namespace metaphys
