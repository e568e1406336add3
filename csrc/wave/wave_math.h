// wave_loss_grad, the math of both backends (host/device, no ATen). Unknown: the acceleration a.
// Within one step (free = 1 - m):
//   v_new = free*(v_old + dt*a),  x_new = m*b + free*(x_old + dt*v_new),  xm = (x_new + x_old)/2
//   r = (v_new - v_old)/dt - c^2 * L(xm);  loss = sum(free*r^2) / N, N = max(1, sum free)
// With q = free*r and d xm_j / d a_j = free^2 dt^2 / 2:
//   pseudo gradient (L's neighbours detached): 2/N * q * (free - c^2 * w_c * free^2 * dt^2 / 2)
//   true gradient:                             2/N * (free*q - c^2 * free^2 * dt^2 / 2 * L(q))
// Twin: metaphys.physics.wave.wave_twin.
#pragma once
#include "common/stencil_math.h"

namespace metaphys {
namespace wave {

// a, x_old, v_old, mask, bc [N, 1, H, W]; c, dt [N]; contiguous float64.
struct Args : stencil::Grid {
  const double* a;
  const double* x_old;
  const double* v_old;
  const double* mask;
  const double* bc;
  const double* c;
  const double* dt;
};

MP_HD double new_velocity(double fr, double v_old, double a, double dt) { return fr * (v_old + dt * a); }

// The time-centred height (x_new + x_old)/2 of a cell.
MP_HD double midpoint(double m, double b, double x_old, double v_old, double a, double dt) {
  const double fr = 1.0 - m;
  const double vn = new_velocity(fr, v_old, a, dt);
  const double xn = m * b + fr * (x_old + dt * vn);
  return 0.5 * (xn + x_old);
}

// c2 = c^2 of the sample.
template <int S, class Nb>
MP_HD double residual(const Nb& xm, double v_new, double v_old, double dt, double c2) {
  return (v_new - v_old) / dt - c2 * stencil::laplacian<S>(xm);
}

// scale = 2/N, fr = free of the cell.
template <int S>
MP_HD double grad_pseudo(double q, double fr, double dt, double c2, double scale) {
  return scale * q * (fr - c2 * stencil::centre<S>() * 0.5 * fr * fr * dt * dt);
}
template <int S, class Nb>
MP_HD double grad_true(const Nb& q, double fr, double dt, double c2, double scale) {
  return scale * (fr * q(0, 0) - c2 * 0.5 * fr * fr * dt * dt * stencil::laplacian<S>(q));
}

}  // namespace wave
}  // namespace metaphys
