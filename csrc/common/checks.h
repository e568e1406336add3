// Argument checks at the kernel entry, with messages that say what was wrong and what is expected.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace metaphys {

inline void check_f64_contig(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kDouble, name, " must be float64 (physics runs in float64), got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous; call .contiguous() first");
}

// t must be [n, c, h, w] exactly.
inline void check_shape4(const at::Tensor& t, const char* name, int64_t n, int64_t c, int64_t h, int64_t w) {
  check_f64_contig(t, name);
  TORCH_CHECK(t.dim() == 4 && t.size(0) == n && t.size(1) == c && t.size(2) == h && t.size(3) == w, name,
              " must have shape [", n, ", ", c, ", ", h, ", ", w, "], got ", t.sizes());
}

// A per-sample parameter: [n] float64.
inline void check_param(const at::Tensor& t, const char* name, int64_t n) {
  check_f64_contig(t, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, name, " must have shape [", n, "] (one value per sample), got ",
              t.sizes());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* name) {
  TORCH_CHECK(a.device() == b.device(), name, " is on ", b.device(), " but the unknown is on ", a.device());
}

inline void check_stencil(int64_t stencil) {
  TORCH_CHECK(stencil == 9 || stencil == 5, "stencil must be 9 (isotropic) or 5, got ", stencil);
}

}  // namespace metaphys
