// The one row-parallel loop of the CPU kernels and the deterministic per-sample sums they end with.
// Rows are the flattened [samples * H] rows of W cells; every op parallelises over them.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace metaphys {

// fn(begin, end) on chunks of the rows [0, rows); a chunk holds about `cells` cells (rows * W), so
// small grids stay serial. An op picks `cells` by its cost per cell.
template <class Fn>
inline void for_rows(int64_t rows, int64_t W, int64_t cells, Fn&& fn) {
  if (rows <= 0 || W <= 0) return;
  const int64_t grain = std::max<int64_t>(1, cells / W);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { fn(begin, end); });
}

// f(row) for every row, in parallel chunks as above.
template <class F>
inline void for_each_row(int64_t rows, int64_t W, int64_t cells, const F& f) {
  for_rows(rows, W, cells, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(r);
  });
}

// Per-sample sums of per-row partials (N * rows_per_sample entries), added row by row in a fixed
// order: the result does not depend on the number of threads.
inline void sum_rows(const std::vector<double>& partial, int64_t N, int64_t rows_per_sample, double* out) {
  for (int64_t n = 0; n < N; ++n) {
    double s = 0.0;
    const double* p = partial.data() + n * rows_per_sample;
    for (int64_t k = 0; k < rows_per_sample; ++k) s += p[k];
    out[n] = s;
  }
}

}  // namespace metaphys
