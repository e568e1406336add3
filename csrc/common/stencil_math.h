// The finite-difference stencils every op is written in, for both backends (host/device, no ATen).
//
// A stencil reads a neighbourhood `x`: x(di, dj) is the value at row offset di and column offset
// dj (each in -1..1) from the cell being computed, with the op's padding already applied. The CPU
// builds it from three padded rows (RowsNb, common/row_window.h), the CUDA kernels from a field
// accessor and the padding rule (GridNb, common/stencil_cuda.cuh), fluid from a padded work plane
// (PlaneNb below). Rows grow downwards ("y"), columns are "x"; the order of additions follows the
// PyTorch twin (metaphys/physics/stencils.py) so that kernel and twin agree to a few ulps.
#pragma once
#include <stdint.h>

#include <type_traits>

#include "common/hd.h"

namespace metaphys {
namespace stencil {

// 9-point: 1/4 * [[1, 2, 1], [2, -12, 2], [1, 2, 1]]; 5-point: [[0, 1, 0], [1, -4, 1], [0, 1, 0]].
// The centre weight is also the derivative of the detached Laplacian w.r.t. its centre cell.
template <int S>
MP_HD constexpr double centre() {
  static_assert(S == 9 || S == 5, "stencil must be 9 or 5");
  return S == 9 ? -3.0 : -4.0;
}

// Neighbour part of the Laplacian (everything except the centre term).
template <int S, class Nb>
MP_HD double around(const Nb& x) {
  const double axis = x(-1, 0) + x(1, 0) + x(0, -1) + x(0, 1);
  if constexpr (S == 9) {
    const double diag = x(-1, -1) + x(-1, 1) + x(1, -1) + x(1, 1);
    return 0.25 * diag + 0.5 * axis;
  } else {
    return axis;
  }
}

template <int S, class Nb>
MP_HD double laplacian(const Nb& x) {
  return around<S>(x) + centre<S>() * x(0, 0);
}

// Central differences: x along columns, y along rows.
template <class Nb>
MP_HD double dx_c(const Nb& x) {
  return 0.5 * (x(0, 1) - x(0, -1));
}
template <class Nb>
MP_HD double dy_c(const Nb& x) {
  return 0.5 * (x(1, 0) - x(-1, 0));
}

// Size and options of a grid-op call (laplace, diffusion, wave, burgers): every op's Args starts
// with it; checked_grid (common/checks.h) fills it.
struct Grid {
  int64_t N, H, W;
  int stencil;     // 9 or 5
  bool true_grad;  // exact gradient instead of the detached-neighbour pseudo-gradient
};

// Calls fn(std::integral_constant<int, S>{}) for the runtime stencil (already validated).
template <class Fn>
inline void dispatch_stencil(int64_t stencil, Fn&& fn) {
  if (stencil == 9) {
    fn(std::integral_constant<int, 9>{});
  } else {
    fn(std::integral_constant<int, 5>{});
  }
}

// The unknown with its Dirichlet values imposed: m*b + (1-m)*u (mask m is 0 or 1).
MP_HD double impose(double m, double b, double u) { return m * b + (1.0 - m) * u; }

// A padded plane (row stride s) around flat index k; the halo holds the padding value.
struct PlaneNb {
  const double* p;  // the centre cell
  int64_t s;
  MP_HD double operator()(int di, int dj) const { return p[di * s + dj]; }
};

// A neighbourhood of the pointwise product of two neighbourhoods (e.g. v_x * q).
template <class A, class B>
struct ProductNb {
  A a;
  B b;
  MP_HD double operator()(int di, int dj) const { return a(di, dj) * b(di, dj); }
};
template <class A, class B>
MP_HD ProductNb<A, B> product(const A& a, const B& b) {
  return ProductNb<A, B>{a, b};
}

}  // namespace stencil
}  // namespace metaphys
