// 3-D Navier-Stokes (MAC grid, edge vector potential a + pressure p) loss and TRUE gradient, per
// grid point. Shared by the CPU kernel (fluid3d_cpu.cpp) and the CUDA kernel (fluid3d_cuda.cu):
// plain C++ on raw pointers, no ATen. Layout and formulas: metaphys/physics/fluid3d.py (the twin).
//
// Axes c = 0, 1, 2 are (z, y, x) = the tensor dims (D, H, W); channel c of a, v, bc and force is
// axis c. The passes follow the 2-D op (csrc/fluid/fluid_math.h); each only reads what earlier
// passes wrote, so each is embarrassingly parallel and the result deterministic:
//   pass 0  per-sample sums of a_z, a_y, a_x and p (reduction, done by the caller) -> means
//   pass 1  face velocities v_new, v_new - v_old, v_bar                          (fluid3d_velocity_at)
//   pass 2  scaled residuals g_c = 2 w_nav (1-c_c) R_c / N_crop and the point's
//           loss contribution                                                     (fluid3d_residual_at)
//   pass 3  adjoint: d loss / d v_new on the three face grids, d loss / d p      (fluid3d_adjoint_at)
//   pass 4  d loss / d a = curl^T (d loss / d v_new) + gauge term                 (fluid3d_grad_a_at)
// Unlike the 2-D op, pass 3 recomputes the products it needs from g and v_bar instead of storing
// them (24 planes in 3-D), so the scratch is 15 padded volumes.
//
// Work arrays are volumes with a one-cell zero halo: [N, D+2, H+2, W+2], point (k, i, j) at
// ((n*(D+2) + k+1)*(H+2) + i+1)*(W+2) + j+1. The halo is zeroed by the caller and never written;
// every interior entry is written by a pass before a later pass reads it, so neighbour reads (at most
// one cell along each axis) need no bounds checks and read 0 outside the grid: the twin's zero padding.
#pragma once
#include <stdint.h>

#include "common/hd.h"

namespace metaphys {
namespace fluid3d {

constexpr int kWorkPlanes = 15;  // padded volumes the caller allocates: vn, dv, vb, g, gvn (x3 each)

struct Args {
  // inputs (unpadded, contiguous)
  const double* u;      // [N,4,D,H,W]  a_z, a_y, a_x, p
  const double* a_old;  // [N,3,D,H,W]
  const double* mask;   // [N,1,D,H,W]  nodes
  const double* bc;     // [N,3,D,H,W]  node values of (v_z, v_y, v_x)
  const double* force;  // [N,3,D,H,W]  force density on the (z, y, x) faces
  const double* rho;    // [N]
  const double* mu;     // [N]
  const double* dt;     // [N]
  double w_nav, w_bound, w_a, w_p;
  int64_t N, D, H, W;
  // padded work volumes [N, D+2, H+2, W+2], one per axis
  double* vn[3];
  double* dv[3];
  double* vb[3];
  double* g[3];
  double* gvn[3];
  const double* mean_a;  // [N*3], mean_a[n*3 + c]
  const double* mean_p;  // [N]
  // outputs
  double* grad;  // [N,4,D,H,W]
};

// flat index of (n, k, i, j) in a padded work volume
MP_HD int64_t pidx(const Args& g, int64_t n, int64_t k, int64_t i, int64_t j) {
  return ((n * (g.D + 2) + k + 1) * (g.H + 2) + i + 1) * (g.W + 2) + j + 1;
}
// padded-volume stride of axis c (0 = z, 1 = y, 2 = x)
MP_HD int64_t stride(const Args& g, int c) { return c == 0 ? (g.H + 2) * (g.W + 2) : (c == 1 ? g.W + 2 : 1); }
MP_HD int unit(int c, int axis) { return c == axis ? 1 : 0; }

// x[n, c, k, i, j] of an unpadded [N, C, D, H, W] input, 0 outside the grid
MP_HD double in5(const double* x, int64_t C, int64_t c, const Args& g, int64_t n, int64_t k, int64_t i, int64_t j) {
  if (k < 0 || k >= g.D || i < 0 || i >= g.H || j < 0 || j >= g.W) return 0.0;
  return x[(((n * C + c) * g.D + k) * g.H + i) * g.W + j];
}
MP_HD bool in_crop(const Args& g, int64_t k, int64_t i, int64_t j) {
  return k >= 1 && k <= g.D - 2 && i >= 1 && i <= g.H - 2 && j >= 1 && j <= g.W - 2;
}
MP_HD double crop_cells(const Args& g) { return (double)((g.D - 2) * (g.H - 2) * (g.W - 2)); }

// 27-point Laplacian 4*(B^3 - 1), B = [1,2,1]/4 per axis (faces 1/4, edges 1/8, corners 1/16,
// centre -7/2) of a padded volume at flat index q; its z-collapse is the 2-D L9.
MP_HD double lap27(const double* x, int64_t q, int64_t sz, int64_t sy) {
  double faces = 0.0, edges = 0.0, corners = 0.0;
  for (int a = -1; a <= 1; ++a) {
    for (int b = -1; b <= 1; ++b) {
      for (int c = -1; c <= 1; ++c) {
        const int nz = (a != 0) + (b != 0) + (c != 0);
        const double v = x[q + a * sz + b * sy + c];
        if (nz == 1) faces += v;
        if (nz == 2) edges += v;
        if (nz == 3) corners += v;
      }
    }
  }
  return 0.25 * faces + 0.125 * edges + 0.0625 * corners - 3.5 * x[q];
}

// Dirichlet flag (all 4 corner nodes masked) and value (mean of their bc_c) of the c-face at (k, i, j):
// its corners are the node and its neighbours along the two other axes d1 < d2.
MP_HD void face_condition(const Args& g, int c, int64_t n, int64_t k, int64_t i, int64_t j, double& cf, double& bf) {
  const int d1 = c == 0 ? 1 : 0, d2 = c == 2 ? 1 : 2;
  const int64_t k1 = k + unit(d1, 0), i1 = i + unit(d1, 1), j1 = j + unit(d1, 2);
  const int64_t k2 = k + unit(d2, 0), i2 = i + unit(d2, 1), j2 = j + unit(d2, 2);
  const int64_t k3 = k1 + unit(d2, 0), i3 = i1 + unit(d2, 1), j3 = j1 + unit(d2, 2);
  cf = in5(g.mask, 1, 0, g, n, k, i, j) * in5(g.mask, 1, 0, g, n, k1, i1, j1) * in5(g.mask, 1, 0, g, n, k2, i2, j2) *
       in5(g.mask, 1, 0, g, n, k3, i3, j3);
  bf = 0.25 * (((in5(g.bc, 3, c, g, n, k, i, j) + in5(g.bc, 3, c, g, n, k1, i1, j1)) + in5(g.bc, 3, c, g, n, k2, i2, j2)) +
               in5(g.bc, 3, c, g, n, k3, i3, j3));
}

// ---- pass 1 ------------------------------------------------------------------------------
// v_c = D^+_{c-1} a_{c+1} - D^+_{c+1} a_{c-1} (channels mod 3), for the new and the old potential.
MP_HD double curl_at(const double* a, int64_t C, const Args& g, int c, int64_t n, int64_t k, int64_t i, int64_t j) {
  const int up = (c + 1) % 3, dn = (c + 2) % 3;
  const double a_up = in5(a, C, up, g, n, k, i, j);
  const double a_up_next = in5(a, C, up, g, n, k + unit(dn, 0), i + unit(dn, 1), j + unit(dn, 2));
  const double a_dn = in5(a, C, dn, g, n, k, i, j);
  const double a_dn_next = in5(a, C, dn, g, n, k + unit(up, 0), i + unit(up, 1), j + unit(up, 2));
  return (a_up_next - a_up) - (a_dn_next - a_dn);
}

MP_HD void fluid3d_velocity_at(const Args& g, int64_t n, int64_t k, int64_t i, int64_t j) {
  const int64_t q = pidx(g, n, k, i, j);
  for (int c = 0; c < 3; ++c) {
    const double vn = curl_at(g.u, 4, g, c, n, k, i, j);
    const double vo = curl_at(g.a_old, 3, g, c, n, k, i, j);
    g.vn[c][q] = vn;
    g.dv[c][q] = vn - vo;
    g.vb[c][q] = 0.5 * (vn + vo);
  }
}

// ---- pass 2 ------------------------------------------------------------------------------
// Returns the point's contribution to the loss (before the gauge terms).
MP_HD double fluid3d_residual_at(const Args& g, int64_t n, int64_t k, int64_t i, int64_t j) {
  const int64_t q = pidx(g, n, k, i, j);
  if (!in_crop(g, k, i, j)) {
    for (int c = 0; c < 3; ++c) g.g[c][q] = 0.0;
    return 0.0;
  }
  const double ncrop = crop_cells(g);
  const double rho = g.rho[n], mu = g.mu[n], dt = g.dt[n];
  const int64_t sz = stride(g, 0), sy = stride(g, 1);
  const double p = in5(g.u, 4, 3, g, n, k, i, j);
  double nav = 0.0, bound = 0.0;
  for (int c = 0; c < 3; ++c) {
    const int64_t ec = stride(g, c);
    const double* vc = g.vb[c];
    double adv = vc[q] * (0.5 * (vc[q + ec] - vc[q - ec]));
    for (int d = 0; d < 3; ++d) {
      if (d == c) continue;
      const int64_t ed = stride(g, d);
      const double* vd = g.vb[d];
      const double lo = 0.5 * (vd[q - ec] + vd[q]);
      const double hi = 0.5 * (vd[q + ed - ec] + vd[q + ed]);
      adv = adv + 0.5 * (lo * (vc[q] - vc[q - ed]) + hi * (vc[q + ed] - vc[q]));
    }
    double r = rho * (g.dv[c][q] / dt + adv);
    const double p_back = in5(g.u, 4, 3, g, n, k - unit(c, 0), i - unit(c, 1), j - unit(c, 2));
    r = r + (p - p_back) - mu * lap27(vc, q, sz, sy) - in5(g.force, 3, c, g, n, k, i, j);
    double cf, bf;
    face_condition(g, c, n, k, i, j, cf, bf);
    const double e = g.vn[c][q] - bf;
    g.g[c][q] = 2.0 * g.w_nav * (1.0 - cf) * r / ncrop;
    nav += (1.0 - cf) * r * r;
    bound += cf * e * e;
  }
  return g.w_nav * nav / ncrop + g.w_bound * bound / (3.0 * ncrop);
}

// ---- pass 3 ------------------------------------------------------------------------------
MP_HD void fluid3d_adjoint_at(const Args& g, int64_t n, int64_t k, int64_t i, int64_t j) {
  const int64_t q = pidx(g, n, k, i, j);
  const int64_t sz = stride(g, 0), sy = stride(g, 1);
  const double rho = g.rho[n], mu = g.mu[n], dt = g.dt[n];
  const double hr = 0.5 * rho, qr = 0.25 * rho;
  const bool crop = in_crop(g, k, i, j);
  double gp = 0.0;
  for (int c = 0; c < 3; ++c) {
    const int64_t ec = stride(g, c);
    const double* gc = g.g[c];
    const double* vc = g.vb[c];
    // d loss / d v_bar_c: the self-advection v_c D^0_c v_c of R_c ...
    double gv = gc[q] * rho * (0.5 * (vc[q + ec] - vc[q - ec])) + hr * (gc[q - ec] * vc[q - ec] - gc[q + ec] * vc[q + ec]);
    for (int d = 0; d < 3; ++d) {
      if (d == c) continue;
      const int64_t ed = stride(g, d);
      const double* vd = g.vb[d];
      // ... the transverse terms lo_cd D^-_d v_c + hi_cd D^+_d v_c of R_c at q, q + e_d, q - e_d ...
      const double lo_q = 0.5 * (vd[q - ec] + vd[q]);
      const double lo_up = 0.5 * (vd[q + ed - ec] + vd[q + ed]);
      const double hi_q = 0.5 * (vd[q + ed - ec] + vd[q + ed]);
      const double hi_dn = 0.5 * (vd[q - ec] + vd[q]);
      gv += hr * (gc[q] * lo_q - gc[q + ed] * lo_up) + hr * (gc[q - ed] * hi_dn - gc[q] * hi_q);
      // ... and v_c interpolated into R_d's transverse term along c (lo_dc, hi_dc)
      const double* gd = g.g[d];
      const double pm_up = gd[q + ed] * (vd[q + ed] - vd[q + ed - ec]);
      const double pm_q = gd[q] * (vd[q] - vd[q - ec]);
      const double pp_a = gd[q - ec + ed] * (vd[q + ed] - vd[q - ec + ed]);
      const double pp_b = gd[q - ec] * (vd[q] - vd[q - ec]);
      gv += qr * (pm_up + pm_q + pp_a + pp_b);
    }
    gv -= mu * lap27(gc, q, sz, sy);  // viscosity (the stencil is symmetric)
    // d loss / d v_new = time derivative + v_bar share + boundary penalty
    double gvn = rho / dt * gc[q] + 0.5 * gv;
    if (crop) {
      double cf, bf;
      face_condition(g, c, n, k, i, j, cf, bf);
      gvn += 2.0 * g.w_bound * cf * (g.vn[c][q] - bf) / (3.0 * crop_cells(g));
    }
    g.gvn[c][q] = gvn;
    gp += gc[q] - gc[q + ec];  // D^-_c p in R_c
  }
  const double cells = (double)(g.D * g.H * g.W);
  g.grad[(((n * 4 + 3) * g.D + k) * g.H + i) * g.W + j] = gp + 2.0 * g.w_p * g.mean_p[n] / cells;
}

// ---- pass 4 ------------------------------------------------------------------------------
// a_m enters v_{m-1} as +D^+_{m+1} a_m and v_{m+1} as -D^+_{m-1} a_m.
MP_HD void fluid3d_grad_a_at(const Args& g, int64_t n, int64_t k, int64_t i, int64_t j) {
  const int64_t q = pidx(g, n, k, i, j);
  const double cells = (double)(g.D * g.H * g.W);
  for (int m = 0; m < 3; ++m) {
    const int prev = (m + 2) % 3, next = (m + 1) % 3;
    const double* gp = g.gvn[prev];
    const double* gx = g.gvn[next];
    const double ga = (gp[q - stride(g, next)] - gp[q]) - (gx[q - stride(g, prev)] - gx[q]) +
                      2.0 * g.w_a * g.mean_a[n * 3 + m] / cells;
    g.grad[(((n * 4 + m) * g.D + k) * g.H + i) * g.W + j] = ga;
  }
}

// Point the Args work volumes into one buffer of kWorkPlanes * N*(D+2)*(H+2)*(W+2) doubles.
MP_HD int64_t volume_doubles(const Args& g) { return g.N * (g.D + 2) * (g.H + 2) * (g.W + 2); }
MP_HD int64_t work_doubles(const Args& g) { return kWorkPlanes * volume_doubles(g); }
inline void assign_work(Args& g, double* work) {
  const int64_t sz = volume_doubles(g);
  for (int c = 0; c < 3; ++c) {
    g.vn[c] = work + (0 + c) * sz;
    g.dv[c] = work + (3 + c) * sz;
    g.vb[c] = work + (6 + c) * sz;
    g.g[c] = work + (9 + c) * sz;
    g.gvn[c] = work + (12 + c) * sz;
  }
}

}  // namespace fluid3d
}  // namespace metaphys
