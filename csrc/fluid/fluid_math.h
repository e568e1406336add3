// Navier-Stokes (MAC grid, vector potential a + pressure p) loss and TRUE gradient, per grid point.
// Shared by the CPU kernel (fluid_cpu.cpp) and the CUDA kernel (fluid_cuda.cu): plain C++ on raw
// pointers, no ATen. Layout and formulas: metaphys/physics/fluid.py (the PyTorch twin).
//
// The work is split into passes over all points (n, i, j); each pass only reads what earlier
// passes wrote, so every pass is embarrassingly parallel and the result is deterministic:
//   pass 0  per-sample sums of a and p (reduction, done by the caller) -> mean_a, mean_p
//   pass 1  velocities v_new, v_old, v_bar on both face grids                (fluid_velocity_at)
//   pass 2  scaled residuals gx, gy and the per-point loss contribution       (fluid_residual_at)
//   pass 3  adjoint: d loss / d v_new on both grids, d loss / d p             (fluid_adjoint_at)
//   pass 4  d loss / d a = curl^T (d loss / d v_new) + gauge term              (fluid_grad_a_at)
// then the caller sums cell_loss per sample (fixed order) and adds the gauge terms.
#pragma once
#include <stdint.h>

#if defined(__CUDACC__)
#define MP_HD __host__ __device__ __forceinline__
#else
#define MP_HD inline
#endif

namespace metaphys {
namespace fluid {

struct Args {
  // inputs
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
  // work arrays, each [N,H,W]
  double* vxn; double* vyn; double* vxo; double* vyo; double* vxb; double* vyb;
  double* gx; double* gy; double* gvxn; double* gvyn;
  double* cell_loss;
  const double* mean_a;  // [N]
  const double* mean_p;  // [N]
  // outputs
  double* grad;  // [N,2,H,W]
};

// x[n][i][j] of a [N,H,W] plane stack (or of channel c of a [N,C,H,W] tensor), 0 outside the grid.
MP_HD double at3(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  if (i < 0 || i >= g.H || j < 0 || j >= g.W) return 0.0;
  return x[(n * g.H + i) * g.W + j];
}
MP_HD double at4(const double* x, int64_t C, int64_t c, const Args& g, int64_t n, int64_t i, int64_t j) {
  if (i < 0 || i >= g.H || j < 0 || j >= g.W) return 0.0;
  return x[((n * C + c) * g.H + i) * g.W + j];
}
MP_HD int64_t idx3(const Args& g, int64_t n, int64_t i, int64_t j) { return (n * g.H + i) * g.W + j; }
MP_HD bool in_crop(const Args& g, int64_t i, int64_t j) {
  return i >= 1 && i <= g.H - 2 && j >= 1 && j <= g.W - 2;
}

// isotropic 9-point Laplacian 1/4*[[1,2,1],[2,-12,2],[1,2,1]] of plane x at (i,j), zero padded
MP_HD double lap9(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  double diag = at3(x, g, n, i - 1, j - 1) + at3(x, g, n, i - 1, j + 1) + at3(x, g, n, i + 1, j - 1) +
                at3(x, g, n, i + 1, j + 1);
  double axis = at3(x, g, n, i - 1, j) + at3(x, g, n, i + 1, j) + at3(x, g, n, i, j - 1) + at3(x, g, n, i, j + 1);
  return 0.25 * diag + 0.5 * axis - 3.0 * at3(x, g, n, i, j);
}

// Dirichlet flags / values of the faces from the corner mask and bc
MP_HD double face_cx(const Args& g, int64_t n, int64_t i, int64_t j) {
  return at4(g.mask, 1, 0, g, n, i, j) * at4(g.mask, 1, 0, g, n, i + 1, j);
}
MP_HD double face_cy(const Args& g, int64_t n, int64_t i, int64_t j) {
  return at4(g.mask, 1, 0, g, n, i, j) * at4(g.mask, 1, 0, g, n, i, j + 1);
}
MP_HD double face_bx(const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (at4(g.bc, 2, 1, g, n, i, j) + at4(g.bc, 2, 1, g, n, i + 1, j));
}
MP_HD double face_by(const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (at4(g.bc, 2, 0, g, n, i, j) + at4(g.bc, 2, 0, g, n, i, j + 1));
}

// ---- pass 1 ------------------------------------------------------------------------------
MP_HD void fluid_velocity_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = idx3(g, n, i, j);
  const double a = at4(g.u, 2, 0, g, n, i, j);
  const double ao = at4(g.a_old, 1, 0, g, n, i, j);
  const double vxn = at4(g.u, 2, 0, g, n, i + 1, j) - a;
  const double vyn = -(at4(g.u, 2, 0, g, n, i, j + 1) - a);
  const double vxo = at4(g.a_old, 1, 0, g, n, i + 1, j) - ao;
  const double vyo = -(at4(g.a_old, 1, 0, g, n, i, j + 1) - ao);
  g.vxn[k] = vxn;
  g.vyn[k] = vyn;
  g.vxo[k] = vxo;
  g.vyo[k] = vyo;
  g.vxb[k] = 0.5 * (vxn + vxo);
  g.vyb[k] = 0.5 * (vyn + vyo);
}

// interpolations of v_bar between the two face grids (notes section 2)
MP_HD double itop(const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (at3(g.vyb, g, n, i, j - 1) + at3(g.vyb, g, n, i, j));
}
MP_HD double ibot(const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (at3(g.vyb, g, n, i + 1, j - 1) + at3(g.vyb, g, n, i + 1, j));
}
MP_HD double ileft(const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (at3(g.vxb, g, n, i - 1, j) + at3(g.vxb, g, n, i, j));
}
MP_HD double iright(const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (at3(g.vxb, g, n, i - 1, j + 1) + at3(g.vxb, g, n, i, j + 1));
}
MP_HD double dxc(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (at3(x, g, n, i, j + 1) - at3(x, g, n, i, j - 1));
}
MP_HD double dyc(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (at3(x, g, n, i + 1, j) - at3(x, g, n, i - 1, j));
}
MP_HD double dxm(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  return at3(x, g, n, i, j) - at3(x, g, n, i, j - 1);
}
MP_HD double dxp(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  return at3(x, g, n, i, j + 1) - at3(x, g, n, i, j);
}
MP_HD double dym(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  return at3(x, g, n, i, j) - at3(x, g, n, i - 1, j);
}
MP_HD double dyp(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  return at3(x, g, n, i + 1, j) - at3(x, g, n, i, j);
}

// ---- pass 2 ------------------------------------------------------------------------------
MP_HD void fluid_residual_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = idx3(g, n, i, j);
  if (!in_crop(g, i, j)) {
    g.gx[k] = 0.0;
    g.gy[k] = 0.0;
    g.cell_loss[k] = 0.0;
    return;
  }
  const double ncrop = (double)((g.H - 2) * (g.W - 2));
  const double rho = g.rho[n], mu = g.mu[n], dt = g.dt[n];
  const double p = at4(g.u, 2, 1, g, n, i, j);
  // R_x on the v_x grid
  const double vxb = g.vxb[k];
  double rx = rho * ((g.vxn[k] - g.vxo[k]) / dt + vxb * dxc(g.vxb, g, n, i, j) +
                     0.5 * (itop(g, n, i, j) * dym(g.vxb, g, n, i, j) + ibot(g, n, i, j) * dyp(g.vxb, g, n, i, j)));
  rx = rx + (p - at4(g.u, 2, 1, g, n, i, j - 1)) - mu * lap9(g.vxb, g, n, i, j) - at4(g.force, 2, 1, g, n, i, j);
  // R_y on the v_y grid
  const double vyb = g.vyb[k];
  double ry = rho * ((g.vyn[k] - g.vyo[k]) / dt + vyb * dyc(g.vyb, g, n, i, j) +
                     0.5 * (ileft(g, n, i, j) * dxm(g.vyb, g, n, i, j) + iright(g, n, i, j) * dxp(g.vyb, g, n, i, j)));
  ry = ry + (p - at4(g.u, 2, 1, g, n, i - 1, j)) - mu * lap9(g.vyb, g, n, i, j) - at4(g.force, 2, 0, g, n, i, j);
  const double cx = face_cx(g, n, i, j), cy = face_cy(g, n, i, j);
  const double fx = 1.0 - cx, fy = 1.0 - cy;
  const double ex = g.vxn[k] - face_bx(g, n, i, j), ey = g.vyn[k] - face_by(g, n, i, j);
  g.gx[k] = 2.0 * g.w_nav * fx * rx / ncrop;
  g.gy[k] = 2.0 * g.w_nav * fy * ry / ncrop;
  g.cell_loss[k] = g.w_nav * (fx * rx * rx + fy * ry * ry) / ncrop +
                   g.w_bound * (cx * ex * ex + cy * ey * ey) / (2.0 * ncrop);
}

// ---- pass 3 ------------------------------------------------------------------------------
MP_HD void fluid_adjoint_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = idx3(g, n, i, j);
  const double rho = g.rho[n], mu = g.mu[n], dt = g.dt[n];
  const double hr = 0.5 * rho;
  const double gxc = g.gx[k], gyc = g.gy[k];
  // d loss / d v_bar_x
  double gvxb = gxc * rho * dxc(g.vxb, g, n, i, j) +
                hr * (at3(g.gx, g, n, i, j - 1) * at3(g.vxb, g, n, i, j - 1) -
                      at3(g.gx, g, n, i, j + 1) * at3(g.vxb, g, n, i, j + 1));
  gvxb += hr * (gxc * itop(g, n, i, j) - at3(g.gx, g, n, i + 1, j) * itop(g, n, i + 1, j));
  gvxb += hr * (at3(g.gx, g, n, i - 1, j) * ibot(g, n, i - 1, j) - gxc * ibot(g, n, i, j));
  gvxb -= mu * lap9(g.gx, g, n, i, j);
  // ... through Ileft / Iright in R_y: A = gy*rho/2*Dx_m(vyb), B = gy*rho/2*Dx_p(vyb)
  {
    const double a_ip = at3(g.gy, g, n, i + 1, j) * hr * dxm(g.vyb, g, n, i + 1, j);
    const double a_ii = gyc * hr * dxm(g.vyb, g, n, i, j);
    const double b_ip = at3(g.gy, g, n, i + 1, j - 1) * hr * dxp(g.vyb, g, n, i + 1, j - 1);
    const double b_ii = at3(g.gy, g, n, i, j - 1) * hr * dxp(g.vyb, g, n, i, j - 1);
    gvxb += 0.5 * (a_ip + a_ii) + 0.5 * (b_ip + b_ii);
  }
  // d loss / d v_bar_y
  double gvyb = gyc * rho * dyc(g.vyb, g, n, i, j) +
                hr * (at3(g.gy, g, n, i - 1, j) * at3(g.vyb, g, n, i - 1, j) -
                      at3(g.gy, g, n, i + 1, j) * at3(g.vyb, g, n, i + 1, j));
  gvyb += hr * (gyc * ileft(g, n, i, j) - at3(g.gy, g, n, i, j + 1) * ileft(g, n, i, j + 1));
  gvyb += hr * (at3(g.gy, g, n, i, j - 1) * iright(g, n, i, j - 1) - gyc * iright(g, n, i, j));
  gvyb -= mu * lap9(g.gy, g, n, i, j);
  // ... through Itop / Ibot in R_x: C = gx*rho/2*Dy_m(vxb), E = gx*rho/2*Dy_p(vxb)
  {
    const double c_jp = at3(g.gx, g, n, i, j + 1) * hr * dym(g.vxb, g, n, i, j + 1);
    const double c_jj = gxc * hr * dym(g.vxb, g, n, i, j);
    const double e_mp = at3(g.gx, g, n, i - 1, j + 1) * hr * dyp(g.vxb, g, n, i - 1, j + 1);
    const double e_mj = at3(g.gx, g, n, i - 1, j) * hr * dyp(g.vxb, g, n, i - 1, j);
    gvyb += 0.5 * (c_jp + c_jj) + 0.5 * (e_mp + e_mj);
  }
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
  const double gp = (gxc - at3(g.gx, g, n, i, j + 1)) + (gyc - at3(g.gy, g, n, i + 1, j)) +
                    2.0 * g.w_p * g.mean_p[n] / hw;
  g.grad[((n * 2 + 1) * g.H + i) * g.W + j] = gp;
}

// ---- pass 4 ------------------------------------------------------------------------------
MP_HD void fluid_grad_a_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const double hw = (double)(g.H * g.W);
  // v_x[i,j] = a[i+1,j] - a[i,j];  v_y[i,j] = a[i,j] - a[i,j+1]
  const double ga = at3(g.gvxn, g, n, i - 1, j) - at3(g.gvxn, g, n, i, j) + at3(g.gvyn, g, n, i, j) -
                    at3(g.gvyn, g, n, i, j - 1) + 2.0 * g.w_a * g.mean_a[n] / hw;
  g.grad[((n * 2 + 0) * g.H + i) * g.W + j] = ga;
}

}  // namespace fluid
}  // namespace metaphys
