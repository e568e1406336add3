// CPU scratch of the staggered-grid kernels (fluid, cloth): padded work planes with a zeroed halo.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace metaphys {
namespace workspace {

// Zero the one-cell halo of each of the `planes` padded [H+2, W+2] planes of `work`; every
// interior entry is written by a pass before any pass reads it, so no full zero fill is needed.
// The CUDA twin is launch_zero_halo (common/workspace_cuda.cuh).
inline void zero_halo(double* work, int64_t planes, int64_t H, int64_t W) {
  const int64_t Hp = H + 2, Wp = W + 2;
  for (int64_t p = 0; p < planes; ++p) {
    double* q = work + p * Hp * Wp;
    std::fill(q, q + Wp, 0.0);
    std::fill(q + (Hp - 1) * Wp, q + Hp * Wp, 0.0);
    for (int64_t i = 1; i < Hp - 1; ++i) {
      q[i * Wp] = 0.0;
      q[i * Wp + Wp - 1] = 0.0;
    }
  }
}

// Scratch memory for the work planes. Up to 64 MiB it is kept per calling thread and grown on
// demand: a fresh multi-megabyte allocation per call costs a page fault per 4 KiB on first touch,
// which at 256^2 doubled the kernel time. Larger requests get a temporary tensor (no memory is
// held between such calls). Each call zeroes the halo it needs and writes every interior entry
// before reading it, so stale contents never leak into a result.
struct Scratch {
  at::Tensor owned;
  double* ptr = nullptr;
};
inline Scratch work_buffer(int64_t n, const at::TensorOptions& opts) {
  constexpr int64_t kKeepMax = (int64_t(64) << 20) / int64_t(sizeof(double));
  Scratch s;
  if (n > kKeepMax) {
    s.owned = at::empty({n}, opts);
    s.ptr = s.owned.data_ptr<double>();
    return s;
  }
  thread_local std::vector<double> buf;
  if ((int64_t)buf.size() < n) {
    buf.clear();
    buf.shrink_to_fit();
    buf.resize(n);
  }
  s.ptr = buf.data();
  return s;
}

// Padded work planes with a zero halo, ready for the passes.
inline Scratch halo_planes(int64_t planes, int64_t H, int64_t W, const at::TensorOptions& opts) {
  Scratch s = work_buffer(planes * (H + 2) * (W + 2), opts);
  zero_halo(s.ptr, planes, H, W);
  return s;
}

}  // namespace workspace
}  // namespace metaphys
