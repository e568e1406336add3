// The argument checks of every op (CPU kernels and CUDA bindings alike). Each message names the
// argument, says what it was and what it must be. Per op, csrc/<op>/<op>_args.h strings these
// together once for both backends; the checks of a tensor return its data for the op's Args.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "common/stencil_math.h"

namespace metaphys {

inline void check_f64_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kDouble, name, " must be float64 (physics runs in float64), got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous; call .contiguous() first");
}

inline void check_same_device(const at::Tensor& u, const at::Tensor& t, const char* name) {
  TORCH_CHECK(u.device() == t.device(), name, " is on ", t.device(), " but the unknown is on ", u.device());
}

// The unknown: a contiguous float64 [N, channels, H, W] tensor; `meaning` names the channels.
inline const double* check_unknown(const at::Tensor& u, const char* name, int64_t channels, const char* meaning) {
  TORCH_CHECK(u.dim() == 4, name, " must have 4 dimensions [N, ", channels, ", H, W], got shape ", u.sizes());
  check_f64_contiguous(u, name);
  TORCH_CHECK(u.size(1) == channels, name, " must have shape [N, ", channels, ", H, W] (", channels, " channel",
              channels == 1 ? "" : "s", ": ", meaning, "), got ", u.sizes());
  return u.const_data_ptr<double>();
}

// The grid of the unknown must be at least h x w (`what`: "fluid grid", "cloth grid", ...).
inline void check_min_grid(const at::Tensor& u, int64_t h, int64_t w, const char* what) {
  TORCH_CHECK(u.size(2) >= h && u.size(3) >= w, what, " must be at least ", h, "x", w, ", got ", u.size(2), "x",
              u.size(3));
}

// A field [N, c, H, W] matching the unknown u, on u's device.
inline const double* check_field(const at::Tensor& u, const at::Tensor& t, const char* name, int64_t c) {
  check_f64_contiguous(t, name);
  TORCH_CHECK(t.dim() == 4 && t.size(0) == u.size(0) && t.size(1) == c && t.size(2) == u.size(2) &&
                  t.size(3) == u.size(3),
              name, " must have shape [", u.size(0), ", ", c, ", ", u.size(2), ", ", u.size(3), "], got ", t.sizes());
  check_same_device(u, t, name);
  return t.const_data_ptr<double>();
}

// A per-sample parameter [N] on u's device.
inline const double* check_per_sample(const at::Tensor& u, const at::Tensor& t, const char* name) {
  check_f64_contiguous(t, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == u.size(0), name, " must have shape [", u.size(0),
              "] (one value per sample), got ", t.sizes());
  check_same_device(u, t, name);
  return t.const_data_ptr<double>();
}

// A per-sample table [N, rows, cols] (any rows; rows < 0: a per-sample vector [N, cols]) on u's
// device; `layout` spells the expected shape for the message, e.g. "[N, S, 4] (cx, cy, cz, r)".
inline const double* check_per_sample_table(const at::Tensor& u, const at::Tensor& t, const char* name, bool has_rows,
                                   int64_t cols, const char* layout) {
  check_f64_contiguous(t, name);
  const int64_t dims = has_rows ? 3 : 2;
  TORCH_CHECK(t.dim() == dims && t.size(0) == u.size(0) && t.size(dims - 1) == cols, name, " must have shape ",
              layout, " with N = ", u.size(0), ", got ", t.sizes());
  check_same_device(u, t, name);
  return t.const_data_ptr<double>();
}

inline void check_stencil(int64_t stencil) {
  TORCH_CHECK(stencil == 9 || stencil == 5, "stencil must be 9 (isotropic) or 5, got ", stencil);
}

// The size and options of a grid-op call on the checked unknown u.
inline stencil::Grid checked_grid(const at::Tensor& u, int64_t stencil, bool true_grad) {
  check_stencil(stencil);
  return stencil::Grid{u.size(0), u.size(2), u.size(3), static_cast<int>(stencil), true_grad};
}

// A non-negative finite scalar weight; returns it.
inline double check_weight(double w, const char* name) {
  TORCH_CHECK(std::isfinite(w) && w >= 0.0, name, " must be a finite number >= 0, got ", w);
  return w;
}

// Values of a CPU per-sample parameter: finite, and > 0 (positive) or >= 0 (otherwise). The CUDA
// bindings skip this (a device->host sync per call); the Problem classes check on the Python side.
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

// The CUDA kernels cover one sample per gridDim.z slice and 8 rows per block in gridDim.y
// (common/launch_cuda.cuh), with 32-bit row and column indices.
inline void check_cuda_launchable(const at::Tensor& u, const char* op) {
  TORCH_CHECK(u.device().is_cuda(), op, ": the CUDA kernel got tensors on ", u.device());
  TORCH_CHECK(u.size(0) <= 65535, op, ": the CUDA kernel takes at most 65535 samples per call, got ", u.size(0));
  TORCH_CHECK(u.size(2) <= 65535 * 8 && u.size(3) <= (int64_t{1} << 30), op,
              ": grid too large for the CUDA kernel: ", u.size(2), " x ", u.size(3));
}

}  // namespace metaphys
