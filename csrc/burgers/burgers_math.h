// burgers_loss_grad, the math of both backends (host/device, no ATen). Backward-Euler 2-D coupled
// Burgers with periodic stencils; unknown v = (v_0, v_1) = (x-, y-component); v~ = m*b + (1-m)*v
// (one mask for both channels). Per channel c:
//   r_c = (v~_c - v_old_c)/dt + (v~_0*Dx_c(v~_c) + v~_1*Dy_c(v~_c)) - mu*L(v~_c)
//   loss = sum_c sum(free*r_c^2) / N, N = max(1, 2*sum free)
// Advection keeps its gradient in both modes, so both need the transposed operator. With
// q_c = free*r_c, Dx_c^T = -Dx_c and L^T = L (periodic):
//   G_d = q_d/dt - Dx_c(v~_0 q_d) - Dy_c(v~_1 q_d) + s_d - mu * (true gradient ? L(q_d) : w_c*q_d)
//   s_0 = sum_c q_c Dx_c(v~_c), s_1 = sum_c q_c Dy_c(v~_c);  grad_d = 2/N * free * G_d
// Twin: metaphys.physics.burgers.burgers_twin.
#pragma once
#include "common/stencil_math.h"

namespace metaphys {
namespace burgers {

// v, v_old, bc [N, 2, H, W]; mask [N, 1, H, W]; mu, dt [N]; contiguous float64.
struct Args : stencil::Grid {
  const double* v;
  const double* v_old;
  const double* mask;
  const double* bc;
  const double* mu;
  const double* dt;
};

// Residual of both channels at one cell: q_c, the loss terms q_c*r_c and the pointwise adjoint terms s_d.
struct CellResidual {
  double q[2];
  double loss[2];
  double s[2];
};

// t0, t1: neighbourhoods of v~_0 and v~_1; vold_c = v_old_c of the cell; fr = free of the cell.
template <int S, class Nb>
MP_HD CellResidual residual(const Nb& t0, const Nb& t1, double vold0, double vold1, double fr, double mu, double dt) {
  const double ux = t0(0, 0), uy = t1(0, 0);
  const double dx[2] = {stencil::dx_c(t0), stencil::dx_c(t1)};
  const double dy[2] = {stencil::dy_c(t0), stencil::dy_c(t1)};
  const double r0 = (ux - vold0) / dt + (ux * dx[0] + uy * dy[0]) - mu * stencil::laplacian<S>(t0);
  const double r1 = (uy - vold1) / dt + (ux * dx[1] + uy * dy[1]) - mu * stencil::laplacian<S>(t1);
  CellResidual c;
  c.q[0] = fr * r0;
  c.q[1] = fr * r1;
  c.loss[0] = c.q[0] * r0;
  c.loss[1] = c.q[1] * r1;
  c.s[0] = c.q[0] * dx[0] + c.q[1] * dx[1];
  c.s[1] = c.q[0] * dy[0] + c.q[1] * dy[1];
  return c;
}

// grad_d at one cell from the neighbourhoods of q_d, v~_0 q_d (px) and v~_1 q_d (py);
// scale_fr = 2/N * free of the cell.
template <int S, class NbQ, class NbP>
MP_HD double grad(const NbQ& q, const NbP& px, const NbP& py, double s, double mu, double dt, double scale_fr,
                  bool true_grad) {
  const double lap = true_grad ? stencil::laplacian<S>(q) : stencil::centre<S>() * q(0, 0);
  return scale_fr * (q(0, 0) / dt - (stencil::dx_c(px) + stencil::dy_c(py)) + s - mu * lap);
}

}  // namespace burgers
}  // namespace metaphys
