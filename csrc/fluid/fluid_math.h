// Navier-Stokes (MAC grid, vector potential a + pressure p) loss and TRUE gradient, per grid point.
// Shared by the CPU kernel (fluid_cpu.cpp) and the CUDA kernel (fluid_cuda.cu): plain C++ on raw
// pointers, no ATen. Layout and formulas: metaphys/physics/fluid.py (the PyTorch twin).
//
// The work is split into passes over all points (n, i, j); each pass only reads what earlier
// passes wrote, so every pass is embarrassingly parallel and the result is deterministic:
//   pass 0  per-sample sums of a and p (reduction, done by the caller) -> mean_a, mean_p
//   pass 1  velocities on both face grids                                   (fluid_velocity_at)
//   pass 2  scaled residuals gx, gy, the products the adjoint needs and the
//           per-point loss contribution                                     (fluid_residual_at)
//   pass 3  adjoint: d loss / d v_new on both grids, d loss / d p           (fluid_adjoint_at)
//   pass 4  d loss / d a = curl^T (d loss / d v_new) + gauge term            (fluid_grad_a_at)
// fluid_residual_at returns the point's loss contribution; the caller sums them per sample (fixed
// order) and adds the gauge terms.
//
// Work arrays are planes with a one-cell zero halo: [N, H+2, W+2], point (i, j) at
// (i+1)*(W+2) + (j+1). The halo is zero (the caller zeroes only the halo: every interior entry is
// written by a pass before a later pass reads it) and never written, so neighbour reads need no
// bounds checks and read 0 outside the grid, which is the zero padding of the twin.
#pragma once
#include <stdint.h>

#include "common/hd.h"
#include "common/stencil_math.h"

namespace metaphys {
namespace fluid {

constexpr int kWorkPlanes = 20;  // number of padded work planes the caller allocates

struct Args {
  // inputs (unpadded, contiguous)
  const double* u;      // [N,2,H,W]  ch0 = a, ch1 = p
  const double* a_old;  // [N,1,H,W]
  const double* mask;   // [N,1,H,W]
  const double* bc;     // [N,2,H,W]  ch0 = v_y, ch1 = v_x (corner values)
  const double* force;  // [N,2,H,W]  ch0 = f_y on the v_y grid, ch1 = f_x on the v_x grid
  const double* rho;    // [N]
  const double* mu;     // [N]
  const double* dt;     // [N]
  double w_nav, w_bound, w_a, w_p;
  int64_t N, H, W;
  // padded work planes [N, H+2, W+2]
  double* vxn; double* vyn; double* dvx; double* dvy; double* vxb; double* vyb;
  double* gx; double* gy;
  double* sx; double* sy;   // gx*vxb, gy*vyb
  double* tx; double* bx;   // gx*Itop(vyb), gx*Ibot(vyb)
  double* ly; double* ry;   // gy*Ileft(vxb), gy*Iright(vxb)
  double* pa; double* pb;   // gy*Dx_m(vyb), gy*Dx_p(vyb)
  double* pc; double* pe;   // gx*Dy_m(vxb), gx*Dy_p(vxb)
  double* gvxn; double* gvyn;
  const double* mean_a;  // [N]
  const double* mean_p;  // [N]
  // outputs
  double* grad;  // [N,2,H,W]
};

// index into a padded work plane
MP_HD int64_t pidx(const Args& g, int64_t n, int64_t i, int64_t j) {
  return (n * (g.H + 2) + i + 1) * (g.W + 2) + j + 1;
}
// x[n, c, i, j] of an unpadded [N, C, H, W] input, 0 outside the grid
MP_HD double in4(const double* x, int64_t C, int64_t c, const Args& g, int64_t n, int64_t i, int64_t j) {
  if (i < 0 || i >= g.H || j < 0 || j >= g.W) return 0.0;
  return x[((n * C + c) * g.H + i) * g.W + j];
}
MP_HD bool in_crop(const Args& g, int64_t i, int64_t j) {
  return i >= 1 && i <= g.H - 2 && j >= 1 && j <= g.W - 2;
}

// isotropic 9-point Laplacian (common/stencil_math.h) of a padded plane at flat index k
MP_HD double lap9(const double* x, int64_t k, int64_t s) { return stencil::laplacian<9>(stencil::PlaneNb{x + k, s}); }

// Dirichlet flags / values of the faces from the corner mask and bc
MP_HD double face_cx(const Args& g, int64_t n, int64_t i, int64_t j) {
  return in4(g.mask, 1, 0, g, n, i, j) * in4(g.mask, 1, 0, g, n, i + 1, j);
}
MP_HD double face_cy(const Args& g, int64_t n, int64_t i, int64_t j) {
  return in4(g.mask, 1, 0, g, n, i, j) * in4(g.mask, 1, 0, g, n, i, j + 1);
}
MP_HD double face_bx(const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (in4(g.bc, 2, 1, g, n, i, j) + in4(g.bc, 2, 1, g, n, i + 1, j));
}
MP_HD double face_by(const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (in4(g.bc, 2, 0, g, n, i, j) + in4(g.bc, 2, 0, g, n, i, j + 1));
}

// ---- pass 1 ------------------------------------------------------------------------------
MP_HD void fluid_velocity_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = pidx(g, n, i, j);
  const double a = in4(g.u, 2, 0, g, n, i, j);
  const double ao = in4(g.a_old, 1, 0, g, n, i, j);
  const double vxn = in4(g.u, 2, 0, g, n, i + 1, j) - a;
  const double vyn = -(in4(g.u, 2, 0, g, n, i, j + 1) - a);
  const double vxo = in4(g.a_old, 1, 0, g, n, i + 1, j) - ao;
  const double vyo = -(in4(g.a_old, 1, 0, g, n, i, j + 1) - ao);
  g.vxn[k] = vxn;
  g.vyn[k] = vyn;
  g.dvx[k] = vxn - vxo;
  g.dvy[k] = vyn - vyo;
  g.vxb[k] = 0.5 * (vxn + vxo);
  g.vyb[k] = 0.5 * (vyn + vyo);
}

// ---- pass 2 ------------------------------------------------------------------------------
// Returns the point's contribution to the loss (before the gauge terms).
MP_HD double fluid_residual_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = pidx(g, n, i, j);
  const int64_t s = g.W + 2;
  if (!in_crop(g, i, j)) {
    g.gx[k] = 0.0; g.gy[k] = 0.0; g.sx[k] = 0.0; g.sy[k] = 0.0; g.tx[k] = 0.0; g.bx[k] = 0.0;
    g.ly[k] = 0.0; g.ry[k] = 0.0; g.pa[k] = 0.0; g.pb[k] = 0.0; g.pc[k] = 0.0; g.pe[k] = 0.0;
    return 0.0;
  }
  const double ncrop = (double)((g.H - 2) * (g.W - 2));
  const double rho = g.rho[n], mu = g.mu[n], dt = g.dt[n];
  const double* vxb = g.vxb;
  const double* vyb = g.vyb;
  const double p = in4(g.u, 2, 1, g, n, i, j);
  // R_x on the v_x grid
  const double itop = 0.5 * (vyb[k - 1] + vyb[k]);
  const double ibot = 0.5 * (vyb[k + s - 1] + vyb[k + s]);
  const double dym_x = vxb[k] - vxb[k - s];
  const double dyp_x = vxb[k + s] - vxb[k];
  double rx = rho * (g.dvx[k] / dt + vxb[k] * (0.5 * (vxb[k + 1] - vxb[k - 1])) +
                     0.5 * (itop * dym_x + ibot * dyp_x));
  rx = rx + (p - in4(g.u, 2, 1, g, n, i, j - 1)) - mu * lap9(vxb, k, s) - in4(g.force, 2, 1, g, n, i, j);
  // R_y on the v_y grid
  const double ileft = 0.5 * (vxb[k - s] + vxb[k]);
  const double iright = 0.5 * (vxb[k - s + 1] + vxb[k + 1]);
  const double dxm_y = vyb[k] - vyb[k - 1];
  const double dxp_y = vyb[k + 1] - vyb[k];
  double ry = rho * (g.dvy[k] / dt + vyb[k] * (0.5 * (vyb[k + s] - vyb[k - s])) +
                     0.5 * (ileft * dxm_y + iright * dxp_y));
  ry = ry + (p - in4(g.u, 2, 1, g, n, i - 1, j)) - mu * lap9(vyb, k, s) - in4(g.force, 2, 0, g, n, i, j);
  const double cx = face_cx(g, n, i, j), cy = face_cy(g, n, i, j);
  const double fx = 1.0 - cx, fy = 1.0 - cy;
  const double ex = g.vxn[k] - face_bx(g, n, i, j), ey = g.vyn[k] - face_by(g, n, i, j);
  const double gx = 2.0 * g.w_nav * fx * rx / ncrop;
  const double gy = 2.0 * g.w_nav * fy * ry / ncrop;
  g.gx[k] = gx;
  g.gy[k] = gy;
  g.sx[k] = gx * vxb[k];
  g.sy[k] = gy * vyb[k];
  g.tx[k] = gx * itop;
  g.bx[k] = gx * ibot;
  g.ly[k] = gy * ileft;
  g.ry[k] = gy * iright;
  g.pa[k] = gy * dxm_y;
  g.pb[k] = gy * dxp_y;
  g.pc[k] = gx * dym_x;
  g.pe[k] = gx * dyp_x;
  return g.w_nav * (fx * rx * rx + fy * ry * ry) / ncrop + g.w_bound * (cx * ex * ex + cy * ey * ey) / (2.0 * ncrop);
}

// ---- pass 3 ------------------------------------------------------------------------------
MP_HD void fluid_adjoint_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = pidx(g, n, i, j);
  const int64_t s = g.W + 2;
  const double rho = g.rho[n], mu = g.mu[n], dt = g.dt[n];
  const double hr = 0.5 * rho, qr = 0.25 * rho;
  const double gxc = g.gx[k], gyc = g.gy[k];
  // d loss / d v_bar_x: advection v_x Dx_c v_x, Itop/Ibot * Dy_{m,p} v_x, viscosity, and the
  // Ileft/Iright interpolations of v_x inside R_y
  double gvxb = gxc * rho * (0.5 * (g.vxb[k + 1] - g.vxb[k - 1])) + hr * (g.sx[k - 1] - g.sx[k + 1]) +
                hr * (g.tx[k] - g.tx[k + s]) + hr * (g.bx[k - s] - g.bx[k]) - mu * lap9(g.gx, k, s) +
                qr * (g.pa[k + s] + g.pa[k] + g.pb[k + s - 1] + g.pb[k - 1]);
  // d loss / d v_bar_y: the mirror image, with Itop/Ibot of v_y inside R_x
  double gvyb = gyc * rho * (0.5 * (g.vyb[k + s] - g.vyb[k - s])) + hr * (g.sy[k - s] - g.sy[k + s]) +
                hr * (g.ly[k] - g.ly[k + 1]) + hr * (g.ry[k - 1] - g.ry[k]) - mu * lap9(g.gy, k, s) +
                qr * (g.pc[k + 1] + g.pc[k] + g.pe[k - s + 1] + g.pe[k - s]);
  // d loss / d v_new = time derivative + v_bar share + boundary penalty
  double gvxn = rho / dt * gxc + 0.5 * gvxb;
  double gvyn = rho / dt * gyc + 0.5 * gvyb;
  if (in_crop(g, i, j)) {
    const double ncrop = (double)((g.H - 2) * (g.W - 2));
    gvxn += g.w_bound * face_cx(g, n, i, j) * (g.vxn[k] - face_bx(g, n, i, j)) / ncrop;
    gvyn += g.w_bound * face_cy(g, n, i, j) * (g.vyn[k] - face_by(g, n, i, j)) / ncrop;
  }
  g.gvxn[k] = gvxn;
  g.gvyn[k] = gvyn;
  // d loss / d p: Dx_m(p) in R_x, Dy_m(p) in R_y, gauge
  const double hw = (double)(g.H * g.W);
  const double gp = (gxc - g.gx[k + 1]) + (gyc - g.gy[k + s]) + 2.0 * g.w_p * g.mean_p[n] / hw;
  g.grad[((n * 2 + 1) * g.H + i) * g.W + j] = gp;
}

// ---- pass 4 ------------------------------------------------------------------------------
MP_HD void fluid_grad_a_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = pidx(g, n, i, j);
  const int64_t s = g.W + 2;
  const double hw = (double)(g.H * g.W);
  // v_x[i,j] = a[i+1,j] - a[i,j];  v_y[i,j] = a[i,j] - a[i,j+1]
  const double ga = g.gvxn[k - s] - g.gvxn[k] + g.gvyn[k] - g.gvyn[k - 1] + 2.0 * g.w_a * g.mean_a[n] / hw;
  g.grad[((n * 2 + 0) * g.H + i) * g.W + j] = ga;
}

// Point the Args work planes into one buffer (zero halo) of kWorkPlanes * N*(H+2)*(W+2) doubles.
MP_HD int64_t work_doubles(const Args& g) { return kWorkPlanes * g.N * (g.H + 2) * (g.W + 2); }
inline void assign_work(Args& g, double* work) {
  const int64_t sz = g.N * (g.H + 2) * (g.W + 2);
  double** planes[kWorkPlanes] = {&g.vxn, &g.vyn, &g.dvx, &g.dvy, &g.vxb, &g.vyb, &g.gx, &g.gy, &g.sx, &g.sy, &g.tx,
                                  &g.bx, &g.ly, &g.ry, &g.pa, &g.pb, &g.pc, &g.pe, &g.gvxn, &g.gvyn};
  for (int q = 0; q < kWorkPlanes; ++q) *planes[q] = work + q * sz;
}

}  // namespace fluid
}  // namespace metaphys
