// laplace3d_loss_grad, the math of both backends (host/device, no ATen). With u~ = m*b + (1-m)*u on
// a [D, H, W] node grid (zero outside the grid):
//   r = L(u~) + f;  loss = sum(free*r^2) / N, N = max(1, sum free);  q = free*r
//   pseudo gradient (neighbours of L detached): 2/N * w_c * free * q
//   true gradient:                              2/N * free * L(q)   (L symmetric)
// L: the isotropic 27-point Laplacian (faces 1/4, edges 1/8, corners 1/16, centre -7/2) or the
// 7-point one (faces 1, centre -6). Twin: metaphys.physics.laplace3d.laplace3d_twin (same order of
// additions: faces, edges, corners, each in the (dk, di, dj) loop order).
#pragma once
#include <stdint.h>

#include "common/hd.h"

namespace metaphys {
namespace laplace3d {

// Contiguous float64 [N, 1, D, H, W] fields.
struct Args {
  const double* u;
  const double* mask;
  const double* bc;
  const double* f;
  int64_t N, D, H, W;
  int stencil;     // 27 or 7
  bool true_grad;
};

template <int S>
MP_HD constexpr double centre() {
  static_assert(S == 27 || S == 7, "stencil must be 27 or 7");
  return S == 27 ? -3.5 : -6.0;
}

// L at a node from an accessor x(dk, di, dj) (padding applied by the accessor).
template <int S, class Nb>
MP_HD double laplacian(const Nb& x) {
  double faces = 0.0, edges = 0.0, corners = 0.0;
  bool first_face = true, first_edge = true, first_corner = true;
  for (int a = -1; a <= 1; ++a) {
    for (int b = -1; b <= 1; ++b) {
      for (int c = -1; c <= 1; ++c) {
        const int kind = (a != 0) + (b != 0) + (c != 0);
        if (kind == 1) {
          faces = first_face ? x(a, b, c) : faces + x(a, b, c);
          first_face = false;
        } else if (S == 27 && kind == 2) {
          edges = first_edge ? x(a, b, c) : edges + x(a, b, c);
          first_edge = false;
        } else if (S == 27 && kind == 3) {
          corners = first_corner ? x(a, b, c) : corners + x(a, b, c);
          first_corner = false;
        }
      }
    }
  }
  if (S == 7) return faces + centre<S>() * x(0, 0, 0);
  return ((0.25 * faces + 0.125 * edges) + 0.0625 * corners) + centre<S>() * x(0, 0, 0);
}

MP_HD double impose(double m, double b, double u) { return m * b + (1.0 - m) * u; }

// u~ at (n, k, i, j), 0 outside the grid.
struct Imposed {
  const Args* g;
  int64_t n, k, i, j;
  MP_HD double operator()(int dk, int di, int dj) const {
    const int64_t kk = k + dk, ii = i + di, jj = j + dj;
    if (kk < 0 || kk >= g->D || ii < 0 || ii >= g->H || jj < 0 || jj >= g->W) return 0.0;
    const int64_t o = ((n * g->D + kk) * g->H + ii) * g->W + jj;
    return impose(g->mask[o], g->bc[o], g->u[o]);
  }
};

// a plain field x at (n, k, i, j), 0 outside the grid.
struct Plain {
  const double* x;
  int64_t D, H, W;
  int64_t n, k, i, j;
  MP_HD double operator()(int dk, int di, int dj) const {
    const int64_t kk = k + dk, ii = i + di, jj = j + dj;
    if (kk < 0 || kk >= D || ii < 0 || ii >= H || jj < 0 || jj >= W) return 0.0;
    return x[((n * D + kk) * H + ii) * W + jj];
  }
};

// q = free*r at a node (flat index o); returns q and writes the loss contribution q*r.
template <int S>
MP_HD double q_at(const Args& g, int64_t n, int64_t k, int64_t i, int64_t j, double* contrib) {
  const int64_t o = ((n * g.D + k) * g.H + i) * g.W + j;
  const double r = laplacian<S>(Imposed{&g, n, k, i, j}) + g.f[o];
  const double q = (1.0 - g.mask[o]) * r;
  *contrib = q * r;
  return q;
}

// scale = 2/N, fr = free of the node.
template <int S>
MP_HD double grad_pseudo(double q, double fr, double scale) {
  return scale * centre<S>() * fr * q;
}
template <int S, class Nb>
MP_HD double grad_true(const Nb& q, double fr, double scale) {
  return scale * fr * laplacian<S>(q);
}

}  // namespace laplace3d
}  // namespace metaphys
