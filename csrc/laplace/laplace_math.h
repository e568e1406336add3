// laplace_loss_grad, the math of both backends (host/device, no ATen). With u~ = m*b + (1-m)*u:
//   r = L(u~) + f;  loss = sum(free*r^2) / N, N = max(1, sum free);  q = free*r
//   pseudo gradient (neighbours of L detached): 2/N * w_c * free * q
//   true gradient:                              2/N * free * L^T(q), and L^T = L (symmetric stencil)
// Twin: metaphys.physics.laplace.laplace_twin.
#pragma once
#include "common/stencil_math.h"

namespace metaphys {
namespace laplace {

// Contiguous float64 [N, 1, H, W] fields.
struct Args : stencil::Grid {
  const double* u;
  const double* mask;
  const double* bc;
  const double* f;
};

// r at a cell from the neighbourhood of u~.
template <int S, class Nb>
MP_HD double residual(const Nb& ut, double f) {
  return stencil::laplacian<S>(ut) + f;
}

// scale = 2/N, fr = free of the cell.
template <int S>
MP_HD double grad_pseudo(double q, double fr, double scale) {
  return scale * stencil::centre<S>() * fr * q;
}
template <int S, class Nb>
MP_HD double grad_true(const Nb& q, double fr, double scale) {
  return scale * fr * stencil::laplacian<S>(q);
}

}  // namespace laplace
}  // namespace metaphys
