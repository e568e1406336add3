// The fused residual -> gradient sweep of the CPU grid ops (laplace, diffusion, wave, burgers):
// sliding windows of three padded rows that feed the shared stencils (common/stencil_math.h), the
// halo rule (zero padding or periodic wrap), and the free-cell counts that normalise the losses.
//
// Layout: fields are contiguous [N, C, H, W] float64; a "plane" is one (sample, channel) H x W image.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "common/parallel_cpu.h"
#include "common/stencil_math.h"

namespace metaphys {
namespace stencil {

// Periodic index: k mod n in [0, n).
inline int64_t wrap(int64_t k, int64_t n) {
  k %= n;
  return k < 0 ? k + n : k;
}

// The neighbourhood of one column in three padded rows (see stencil_math.h).
struct RowsNb {
  const double* up;
  const double* mid;
  const double* dn;
  double operator()(int di, int dj) const { return (di < 0 ? up : di > 0 ? dn : mid)[dj]; }
};

// Rows i-1, i, i+1 of a field, each pointing at column 0 and valid for columns -1 .. W.
struct Rows3 {
  const double* up;
  const double* mid;
  const double* dn;
  RowsNb at(int64_t j) const { return RowsNb{up + j, mid + j, dn + j}; }
};

// A sliding window of three padded rows of `fields` derived fields. The fields are produced row by
// row by `fill(plane, i, out)`, which writes columns 0..W-1 of row i (0 <= i < H) of `plane`: field
// k at out + k * stride() (stride = W + 2). Rows outside the grid are zero (zero padding) or
// wrapped (periodic); so are the column halos. Moving to the next row of the same plane produces
// one new row; any other move produces all three.
class RowWindow {
 public:
  RowWindow(int64_t H, int64_t W, bool periodic, int fields = 1)
      : H_(H), W_(W), periodic_(periodic), fields_(fields),
        store_(static_cast<size_t>(3 * fields * (W + 2)), 0.0) {
    for (int k = 0; k < 3; ++k) slot_[k] = store_.data() + k * fields * (W + 2) + 1;
  }

  int64_t stride() const { return W_ + 2; }

  template <class Fill>
  void move_to(int64_t plane, int64_t i, Fill&& fill) {
    if (plane == plane_ && i == i_) return;
    if (plane == plane_ && i == i_ + 1) {
      double* old = slot_[0];
      slot_[0] = slot_[1];
      slot_[1] = slot_[2];
      slot_[2] = old;
      plane_ = plane;
      i_ = i;
      load(slot_[2], plane, i + 1, fill);
    } else {
      plane_ = plane;
      i_ = i;
      for (int k = 0; k < 3; ++k) load(slot_[k], plane, i - 1 + k, fill);
    }
  }

  // Rows i-1, i, i+1 of field k.
  Rows3 rows(int k = 0) const {
    const int64_t off = k * (W_ + 2);
    return Rows3{slot_[0] + off, slot_[1] + off, slot_[2] + off};
  }

 private:
  template <class Fill>
  void load(double* p, int64_t plane, int64_t i, Fill& fill) {
    if (periodic_) {
      i = wrap(i, H_);
    } else if (i < 0 || i >= H_) {
      std::fill(p - 1, p - 1 + fields_ * (W_ + 2), 0.0);
      return;
    }
    fill(plane, i, p);
    for (int k = 0; k < fields_; ++k) {
      double* f = p + k * (W_ + 2);
      f[-1] = periodic_ ? f[W_ - 1] : 0.0;
      f[W_] = periodic_ ? f[0] : 0.0;
    }
  }

  int64_t H_, W_;
  bool periodic_;
  int fields_;
  std::vector<double> store_;
  double* slot_[3];
  int64_t plane_ = -1;
  int64_t i_ = -2;
};

// A chunk of rows [begin, end) keeps a window of residual rows that a fill computes on demand from a
// window of state rows. The chunk recomputes the one-row halo it shares with its neighbours but
// records loss partials only for the rows it owns, so each partial has exactly one writer.
struct OwnedRows {
  int64_t begin, end;
  bool owns(int64_t row) const { return row >= begin && row < end; }
};

// Chunk size of the grid ops' row-parallel sweeps, in cells.
constexpr int64_t kChunkCells = 32768;

// Loss denominators max(1, channels * sum(free)) per sample from the [N, 1, H, W] mask. The same
// pass validates the mask: every value must be exactly 0 (free) or 1 (Dirichlet).
inline std::vector<double> free_counts(const at::Tensor& mask, int64_t channels) {
  const int64_t N = mask.size(0), H = mask.size(2), W = mask.size(3);
  const double* m = mask.const_data_ptr<double>();
  std::vector<double> partial(static_cast<size_t>(N * H), 0.0);
  std::vector<char> bad(static_cast<size_t>(N * H), 0);
  for_each_row(N * H, W, kChunkCells, [&](int64_t row) {
    const double* mr = m + row * W;
    double s = 0.0;
    bool b = false;
    for (int64_t j = 0; j < W; ++j) {
      s += 1.0 - mr[j];
      b |= !(mr[j] == 0.0 || mr[j] == 1.0);
    }
    partial[row] = s;
    bad[row] = b;
  });
  TORCH_CHECK(std::none_of(bad.begin(), bad.end(), [](char b) { return b != 0; }),
              "mask must contain only 0 (free cell) and 1 (Dirichlet cell), found other values (or NaN)");
  std::vector<double> count(static_cast<size_t>(N));
  sum_rows(partial, N, H, count.data());
  for (auto& c : count) c = std::max(1.0, c * static_cast<double>(channels));
  return count;
}

// The outputs and loss bookkeeping of one grid-op call on the unknown u: loss [N], grad like u,
// the loss denominators count[n] (which validates the mask) and one loss partial per row.
struct GridCall {
  at::Tensor loss, grad;
  std::vector<double> count;
  std::vector<double> partial;

  GridCall(const at::Tensor& u, const at::Tensor& mask, int64_t channels)
      : loss(at::empty({u.size(0)}, u.options())),
        grad(at::empty_like(u)),
        count(free_counts(mask, channels)),
        partial(static_cast<size_t>(u.size(0) * u.size(2)), 0.0) {}

  // loss[n] = (sum of the per-row partials of sample n) / count[n].
  std::tuple<at::Tensor, at::Tensor> finish() {
    double* L = loss.mutable_data_ptr<double>();
    const int64_t N = loss.size(0);
    sum_rows(partial, N, grad.size(2), L);
    for (int64_t n = 0; n < N; ++n) L[n] /= count[n];
    return {loss, grad};
  }
};

}  // namespace stencil
}  // namespace metaphys
