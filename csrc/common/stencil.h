// Shared CPU building blocks of the grid ops (laplace, diffusion, wave, burgers): one definition
// of the stencils (9/5-point Laplacian, central differences), of the halo rule (zero padding or
// periodic wrap), of the row-parallel driver and of the deterministic per-sample reductions.
//
// Layout: fields are contiguous [N, C, H, W] float64; a "plane" is one (sample, channel) H x W
// image. Row index i grows downwards ("y"), column index j is "x" (see metaphys/physics/stencils.py,
// the PyTorch twin of this file). Arithmetic follows the twin's order of operations where it is
// cheap to do so, so that kernel and twin agree to a few ulps.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/checks.h"

namespace metaphys {
namespace stencil {

// ---------------------------------------------------------------------------------------------
// Weights. 9-point: 1/4 * [[1, 2, 1], [2, -12, 2], [1, 2, 1]]; 5-point: [[0, 1, 0], [1, -4, 1], [0, 1, 0]].
// The centre weight is also the derivative of the detached Laplacian w.r.t. its centre cell.
template <int S>
constexpr double centre() {
  static_assert(S == 9 || S == 5, "stencil must be 9 or 5");
  return S == 9 ? -3.0 : -4.0;
}

// Calls fn(std::integral_constant<int, S>{}) for the runtime stencil (already validated).
template <class Fn>
inline void dispatch_stencil(int64_t stencil, Fn&& fn) {
  if (stencil == 9) {
    fn(std::integral_constant<int, 9>{});
  } else {
    fn(std::integral_constant<int, 5>{});
  }
}

// Periodic index: k mod n in [0, n).
inline int64_t wrap(int64_t k, int64_t n) {
  k %= n;
  return k < 0 ? k + n : k;
}

// ---------------------------------------------------------------------------------------------
// Stencils on padded rows. `up`, `mid`, `dn` point at column 0 of rows i-1, i, i+1 and are valid
// for columns -1 .. W (the halo holds the padding value). j is the column of the centre.
struct Rows3 {
  const double* up;
  const double* mid;
  const double* dn;
};

// Neighbour part of the Laplacian (everything except the centre term).
template <int S>
inline double around(const Rows3& r, int64_t j) {
  const double axis = r.up[j] + r.dn[j] + r.mid[j - 1] + r.mid[j + 1];
  if constexpr (S == 9) {
    const double diag = r.up[j - 1] + r.up[j + 1] + r.dn[j - 1] + r.dn[j + 1];
    return 0.25 * diag + 0.5 * axis;
  } else {
    return axis;
  }
}

template <int S>
inline double laplacian(const Rows3& r, int64_t j) {
  return around<S>(r, j) + centre<S>() * r.mid[j];
}

// Central differences: x along columns, y along rows.
inline double dx_c(const Rows3& r, int64_t j) { return 0.5 * (r.mid[j + 1] - r.mid[j - 1]); }
inline double dy_c(const Rows3& r, int64_t j) { return 0.5 * (r.dn[j] - r.up[j]); }

// ---------------------------------------------------------------------------------------------
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

// The fused residual -> gradient sweep of every grid op: a chunk of rows [begin, end) keeps a
// window of residual rows (q = free*r and helpers) that a fill computes on demand from a window of
// state rows. The chunk recomputes the one-row halo it shares with its neighbours but records loss
// partials only for the rows it owns, so each partial has exactly one writer.
struct OwnedRows {
  int64_t begin, end;
  bool owns(int64_t row) const { return row >= begin && row < end; }
};

// ---------------------------------------------------------------------------------------------
// Row-parallel driver: fn(begin, end) handles global rows [begin, end) of the flattened
// [planes * H] row range. Chunks hold roughly 32k cells so that small grids stay serial.
template <class Fn>
inline void for_rows(int64_t planes, int64_t H, int64_t W, Fn&& fn) {
  const int64_t rows = planes * H;
  if (rows <= 0 || W <= 0) return;
  const int64_t grain = std::max<int64_t>(1, 32768 / W);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { fn(begin, end); });
}

// Per-sample sums of per-row partials, summed row by row in a fixed order (deterministic for any
// number of threads). partial has N * rows_per_sample entries.
inline void sum_rows(const std::vector<double>& partial, int64_t N, int64_t rows_per_sample, double* out) {
  for (int64_t n = 0; n < N; ++n) {
    double s = 0.0;
    const double* p = partial.data() + n * rows_per_sample;
    for (int64_t k = 0; k < rows_per_sample; ++k) s += p[k];
    out[n] = s;
  }
}

// Loss denominators max(1, channels * sum(free)) per sample from the [N, 1, H, W] mask. The same
// pass validates the mask: every value must be exactly 0 (free) or 1 (Dirichlet).
inline std::vector<double> free_counts(const at::Tensor& mask, int64_t channels) {
  const int64_t N = mask.size(0), H = mask.size(2), W = mask.size(3);
  const double* m = mask.const_data_ptr<double>();
  std::vector<double> partial(static_cast<size_t>(N * H), 0.0);
  std::vector<char> bad(static_cast<size_t>(N * H), 0);
  for_rows(N, H, W, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const double* mr = m + row * W;
      double s = 0.0;
      bool b = false;
      for (int64_t j = 0; j < W; ++j) {
        s += 1.0 - mr[j];
        b |= !(mr[j] == 0.0 || mr[j] == 1.0);
      }
      partial[row] = s;
      bad[row] = b;
    }
  });
  TORCH_CHECK(std::none_of(bad.begin(), bad.end(), [](char b) { return b != 0; }),
              "mask must contain only 0 (free cell) and 1 (Dirichlet cell), found other values (or NaN)");
  std::vector<double> count(static_cast<size_t>(N));
  sum_rows(partial, N, H, count.data());
  for (auto& c : count) c = std::max(1.0, c * static_cast<double>(channels));
  return count;
}

// ---------------------------------------------------------------------------------------------
// Entry checks shared by the grid ops (CPU kernels and CUDA bindings).

// The unknown: a contiguous float64 [N, channels, H, W] tensor.
inline void check_unknown(const at::Tensor& u, const char* name, int64_t channels) {
  TORCH_CHECK(u.dim() == 4, name, " must have 4 dimensions [N, ", channels, ", H, W], got shape ", u.sizes());
  check_f64_contig(u, name);
  TORCH_CHECK(u.size(1) == channels, name, " must have ", channels, " channel(s) [N, ", channels,
              ", H, W], got shape ", u.sizes());
}

// A field [N, c, H, W] on the unknown's device.
inline void check_field(const at::Tensor& u, const at::Tensor& t, const char* name, int64_t c) {
  TORCH_CHECK(t.dim() == 4, name, " must have shape [", u.size(0), ", ", c, ", ", u.size(2), ", ", u.size(3),
              "], got ", t.sizes());
  check_shape4(t, name, u.size(0), c, u.size(2), u.size(3));
  check_same_device(u, t, name);
}

// A per-sample parameter [N] on the unknown's device.
inline void check_batch_param(const at::Tensor& u, const at::Tensor& t, const char* name) {
  check_param(t, name, u.size(0));
  check_same_device(u, t, name);
}

// Values of a CPU per-sample parameter: finite, and > 0 (positive) or >= 0 (otherwise).
inline void check_param_values(const at::Tensor& t, const char* name, bool positive) {
  const double* p = t.const_data_ptr<double>();
  for (int64_t n = 0; n < t.size(0); ++n) {
    TORCH_CHECK(std::isfinite(p[n]), name, " must be finite, got ", p[n], " for sample ", n);
    if (positive) {
      TORCH_CHECK(p[n] > 0.0, name, " must be > 0, got ", p[n], " for sample ", n);
    } else {
      TORCH_CHECK(p[n] >= 0.0, name, " must be >= 0, got ", p[n], " for sample ", n);
    }
  }
}

inline void check_cpu(const at::Tensor& u, const char* op) {
  TORCH_CHECK(u.device().is_cpu(), op, ": the CPU kernel got tensors on ", u.device());
}

// The CUDA launch covers one sample per gridDim.z slice and 8 rows per block in gridDim.y. The CUDA
// bindings do not check mask/parameter values (that would need a device->host sync per call);
// the Problem constructors validate them on the Python side.
inline void check_cuda_launchable(const at::Tensor& u, const char* op) {
  TORCH_CHECK(u.device().is_cuda(), op, ": the CUDA kernel got tensors on ", u.device());
  TORCH_CHECK(u.size(0) <= 65535, op, ": the CUDA kernel takes at most 65535 samples per call, got ", u.size(0));
  TORCH_CHECK(u.size(2) <= 65535 * 8 && u.size(3) <= (int64_t{1} << 30), op,
              ": grid too large for the CUDA kernel: ", u.size(2), " x ", u.size(3));
}

}  // namespace stencil
}  // namespace metaphys
