// The device-side neighbourhood of the shared stencils (common/stencil_math.h): GridNb reads a
// field through an accessor f(i, j) and applies the padding rule (zero or periodic) at the edges.
#pragma once
#include <cuda_runtime.h>

#include "common/launch_cuda.cuh"
#include "common/stencil_math.h"

namespace metaphys {
namespace cudak {

__device__ __forceinline__ int wrap(int k, int n) {
  k %= n;
  return k < 0 ? k + n : k;
}

template <bool Periodic, class F>
struct GridNb {
  F f;
  int i, j, H, W;
  __device__ double operator()(int di, int dj) const {
    const int ii = i + di, jj = j + dj;
    if constexpr (Periodic) {
      return f(wrap(ii, H), wrap(jj, W));
    } else {
      return (ii >= 0 && ii < H && jj >= 0 && jj < W) ? f(ii, jj) : 0.0;
    }
  }
};

// The neighbourhood of cell c of an H x W field read through f(i, j).
template <bool Periodic, class F>
__device__ __forceinline__ GridNb<Periodic, F> nb(const F& f, const Cell& c, int H, int W) {
  return GridNb<Periodic, F>{f, c.i, c.j, H, W};
}

// Accessor of plane `plane` of a contiguous field: p[plane * H * W + i * W + j].
struct PlaneOf {
  const double* p;
  int W;
  __device__ double operator()(int i, int j) const { return p[static_cast<int64_t>(i) * W + j]; }
};
__device__ __forceinline__ PlaneOf plane_of(const double* base, int64_t plane, int H, int W) {
  return PlaneOf{base + plane * H * static_cast<int64_t>(W), W};
}

// The unknown of one sample's plane with its Dirichlet values imposed: m*b + (1-m)*u.
struct ImposedOf {
  const double* u;
  const double* mask;
  const double* bc;
  int W;
  __device__ double operator()(int i, int j) const {
    const int64_t k = static_cast<int64_t>(i) * W + j;
    return stencil::impose(mask[k], bc[k], u[k]);
  }
};

}  // namespace cudak
}  // namespace metaphys
