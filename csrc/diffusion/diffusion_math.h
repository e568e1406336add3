// diffusion_loss_grad, the math of both backends (host/device, no ATen). Backward-Euler
// advection-diffusion (velocity channels: 0 = v_y, 1 = v_x), with c~ = m*b + (1-m)*c:
//   r = (c~ - c_old)/dt - D*L(c~) + v_x*Dx_c(c~) + v_y*Dy_c(c~) + div(v)*c~ - R,  div(v) = Dx_c v_x + Dy_c v_y
// loss = sum(free*r^2) / N, N = max(1, sum free). With q = free*r:
//   pseudo gradient (L's neighbours and v.grad c detached): 2/N * free * (1/dt - D*w_c + div v) * q
//   true gradient: 2/N * free * (q/dt - D*L(q) - Dx_c(v_x q) - Dy_c(v_y q) + div(v)*q)
//   (L^T = L and Dx_c^T = -Dx_c under zero padding).
// Twin: metaphys.physics.diffusion.diffusion_twin.
#pragma once
#include "common/stencil_math.h"

namespace metaphys {
namespace diffusion {

// c, c_old, mask, bc, source [N, 1, H, W]; vel [N, 2, H, W]; D, dt [N]; contiguous float64.
struct Args : stencil::Grid {
  const double* c;
  const double* c_old;
  const double* mask;
  const double* bc;
  const double* vel;
  const double* source;
  const double* D;
  const double* dt;
};

template <class Nb>
MP_HD double divergence(const Nb& vx, const Nb& vy) {
  return stencil::dx_c(vx) + stencil::dy_c(vy);
}

template <int S, class NbC, class NbV>
MP_HD double residual(const NbC& ct, const NbV& vx, const NbV& vy, double div, double c_old, double source, double D,
                      double dt) {
  const double cc = ct(0, 0);
  return (cc - c_old) / dt - D * stencil::laplacian<S>(ct) + vx(0, 0) * stencil::dx_c(ct) +
         vy(0, 0) * stencil::dy_c(ct) + div * cc - source;
}

// scale = 2/N, fr = free of the cell.
template <int S>
MP_HD double grad_pseudo(double q, double fr, double div, double D, double dt, double scale) {
  return scale * fr * (1.0 / dt - D * stencil::centre<S>() + div) * q;
}
// vxq, vyq: neighbourhoods of v_x*q and v_y*q.
template <int S, class NbQ, class NbP>
MP_HD double grad_true(const NbQ& q, const NbP& vxq, const NbP& vyq, double fr, double div, double D, double dt,
                       double scale) {
  const double qq = q(0, 0);
  const double g = qq / dt - D * stencil::laplacian<S>(q) - stencil::dx_c(vxq) - stencil::dy_c(vyq) + div * qq;
  return scale * fr * g;
}

}  // namespace diffusion
}  // namespace metaphys
