// Spring-mass cloth loss and TRUE gradient w.r.t. the acceleration, per vertex. Shared by the CPU
// kernel (cloth_cpu.cpp) and the CUDA kernel (cloth_cuda.cu): plain C++ on raw pointers, no ATen.
// Formulas, normalization and conventions: metaphys/physics/cloth.py (the PyTorch twin).
//
// Passes over all vertices (n, i, j); each reads only what earlier passes wrote (deterministic):
//   pass A  x_new, per-vertex terms (inertia, external, damping, soft pins, contact): their
//           energy and d/da                                                   (cloth_vertex_at)
//   pass B  elements owned by vertex (i,j): vertical/horizontal edge (stretch), quad (i,j)
//           (4 shear pairs), bend pairs centred at (i,j): energy and d/d(edge vectors), the
//           parts that belong to the vertex's own two edges already summed
//                                                                             (cloth_element_at)
//   pass C  gather the edge gradients into d loss / d a                       (cloth_grad_at)
// cloth_element_at returns the vertex's whole energy; the caller sums them per sample in a fixed order.
//
// Work planes are [N, H+2, W+2] with a zero halo (the caller zeroes only the halo: passes A and B
// write every interior entry), point (i, j) at (i+1)*(W+2) + (j+1); elements that do not exist
// store 0, so gathers need no bounds checks.
#pragma once
#include <math.h>
#include <stdint.h>

#include "common/hd.h"

namespace metaphys {
namespace cloth {

// plane offsets inside the work buffer (3-vectors use 3 consecutive planes)
enum Plane : int {
  kXN = 0,    // x_new
  kACC = 3,   // d(per-vertex terms)/da
  kLOSS = 6,  // energy per vertex (all terms owned by the vertex)
  kEV = 7,    // grads wrt the vertical edge (i,j)->(i+1,j) from the elements owned by (i,j):
              //   its stretch, quad (i,j) shear (as left edge), bend at (i,j) (as e2)
  kEH = 10,   // grads wrt the horizontal edge (i,j)->(i,j+1): stretch, quad (i,j) (top), bend (e2)
  kQR = 13,   // quad (i,j) shear grad wrt its right edge = vertical edge (i,j+1)
  kQB = 16,   // ... wrt its bottom edge = horizontal edge (i+1,j)
  kBV1 = 19,  // bend at (i,j), vertical pair: grad wrt e1 = vertical edge (i-1,j)
  kBH1 = 22,  // bend at (i,j), horizontal pair: grad wrt e1 = horizontal edge (i,j-1)
  kWorkPlanes = 25
};

// 3-vectors over a scalar type T: double here; the Hessian op (cloth_hessian_math.h) runs the same
// element formulas on forward-mode dual numbers. With T = double every expression is the one it was.
template <class T>
struct Vec3 {
  T x, y, z;
};
using V3 = Vec3<double>;
template <class T>
MP_HDI Vec3<T> vec3(T x, T y, T z) { Vec3<T> r; r.x = x; r.y = y; r.z = z; return r; }
MP_HDI V3 v3(double x, double y, double z) { return vec3<double>(x, y, z); }
template <class T>
MP_HDI Vec3<T> operator+(Vec3<T> a, Vec3<T> b) { return vec3<T>(a.x + b.x, a.y + b.y, a.z + b.z); }
template <class T>
MP_HDI Vec3<T> operator-(Vec3<T> a, Vec3<T> b) { return vec3<T>(a.x - b.x, a.y - b.y, a.z - b.z); }
template <class S, class T>
MP_HDI Vec3<T> operator*(S s, Vec3<T> a) { return vec3<T>(s * a.x, s * a.y, s * a.z); }
template <class T>
MP_HDI T dot(Vec3<T> a, Vec3<T> b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
template <class T>
MP_HDI Vec3<T> cross(Vec3<T> a, Vec3<T> b) {
  return vec3<T>(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x);
}
template <class T>
MP_HDI T norm(Vec3<T> a) { return sqrt(dot(a, a)); }
MP_HD double sgn(double v) { return (double)((v > 0.0) - (v < 0.0)); }

// ---- colliders: one table [N, K, kColliderWidth] --------------------------------------------
// Rows = (kind code, rotation R 3x3 row-major (local -> world), centre 3, parameters 4, friction);
// the kinds, their codes, columns and parameters are listed once in metaphys/colliders.py (the
// Python side: twin, spec, sim; tests/test_cloth_colliders.py checks these numbers against it).
// A vertex at x is seen in a collider's frame as p = R^T (x - centre).
enum ColliderColumn : int {
  kColKind = 0,
  kColRotation = 1,
  kColCenter = 10,
  kColParams = 13,
  kColFriction = 17,
  kColliderWidth = 18
};
enum ColliderKind : int { kNoCollider = 0, kSphere = 1, kBox = 2, kMeshPlanes = 3 };

// The signed distance d of a point p given in the collider's frame, its gradient gd and, where
// Hd != nullptr, its Hessian Hd (3x3 row-major; the curvature the PSD projection drops). false for
// a kind the kernel has no case for: padding (kNoCollider) and mesh colliders (their lagged contact
// planes are per-vertex Python terms, metaphys/physics/cloth.py). A new kind = one case here plus
// its entry (code, parameters, twin distance) in metaphys/colliders.py.
MP_HD bool collider_distance(int kind, const double* prm, const double p[3], double& d, double gd[3], double* Hd) {
  for (int c = 0; c < 3; ++c) gd[c] = 0.0;
  if (Hd) {
    for (int q = 0; q < 9; ++q) Hd[q] = 0.0;
  }
  switch (kind) {
    case kSphere: {  // prm = (radius)
      const double dist = sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]);
      d = dist - prm[0];
      if (dist > 0.0) {
        for (int c = 0; c < 3; ++c) gd[c] = p[c] / dist;
        if (Hd) {  // (I - n n^T) / |p|
          for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c) Hd[3 * r + c] = ((r == c ? 1.0 : 0.0) - gd[r] * gd[c]) / dist;
        }
      }
      return true;
    }
    case kBox: {  // prm = (hx, hy, hz): half extents; edges and corners sharp
      double qv[3], o[3];
      int kmax = 0;
      for (int c = 0; c < 3; ++c) {
        qv[c] = fabs(p[c]) - prm[c];
        o[c] = qv[c] > 0.0 ? qv[c] : 0.0;
        if (qv[c] > qv[kmax]) kmax = c;
      }
      const double on = sqrt(o[0] * o[0] + o[1] * o[1] + o[2] * o[2]);
      d = on + (qv[kmax] < 0.0 ? qv[kmax] : 0.0);
      for (int c = 0; c < 3; ++c) {
        if (on > 0.0) gd[c] += o[c] / on * sgn(p[c]);
      }
      if (qv[kmax] < 0.0) gd[kmax] += sgn(p[kmax]);
      if (Hd && on > 0.0) {  // outside an edge or corner: (P_out - n n^T) / |o|; 0 on faces and inside
        for (int r = 0; r < 3; ++r)
          for (int c = 0; c < 3; ++c) Hd[3 * r + c] = ((r == c && qv[r] > 0.0 ? 1.0 : 0.0) - gd[r] * gd[c]) / on;
      }
      return true;
    }
    default:
      return false;
  }
}

// Contact of the point x with one table row: true when x lies within `margin` of it, with the
// penetration pen = margin - d, the world gradient gw of d and (Hw != nullptr) its world Hessian
// R Hd R^T.
MP_HD bool collider_contact(const double* row, double x, double y, double z, double margin, double& pen,
                            double gw[3], double* Hw) {
  const double* R = row + kColRotation;
  const double* c = row + kColCenter;
  const double dx[3] = {x - c[0], y - c[1], z - c[2]};
  double p[3], d, gl[3], Hl[9];
  for (int a = 0; a < 3; ++a) p[a] = R[a] * dx[0] + R[3 + a] * dx[1] + R[6 + a] * dx[2];
  if (!collider_distance((int)row[kColKind], row + kColParams, p, d, gl, Hw ? Hl : nullptr)) return false;
  pen = margin - d;
  if (!(pen > 0.0)) return false;
  for (int a = 0; a < 3; ++a) gw[a] = R[3 * a] * gl[0] + R[3 * a + 1] * gl[1] + R[3 * a + 2] * gl[2];
  if (Hw) {
    double T[9];  // Hl R^T
    for (int r = 0; r < 3; ++r)
      for (int q = 0; q < 3; ++q) T[3 * r + q] = Hl[3 * r] * R[3 * q] + Hl[3 * r + 1] * R[3 * q + 1] + Hl[3 * r + 2] * R[3 * q + 2];
    for (int r = 0; r < 3; ++r)
      for (int q = 0; q < 3; ++q) Hw[3 * r + q] = R[3 * r] * T[q] + R[3 * r + 1] * T[3 + q] + R[3 * r + 2] * T[6 + q];
  }
  return true;
}

struct Args {
  // inputs (unpadded, contiguous)
  const double* a;        // [N,3,H,W]
  const double* x_old;    // [N,3,H,W]
  const double* v_old;    // [N,3,H,W]
  const double* pin_w;    // [N,1,H,W]
  const double* pin_x;    // [N,3,H,W]
  const double* colliders;  // [N,K,kColliderWidth]: the collider table (see collider_distance)
  const double* gravity;  // [N,3]
  const double* wind;     // [N,3]
  const double *rest, *k_stretch, *k_shear, *k_bend, *mass, *damping, *k_pin, *k_contact, *margin, *dt;  // [N]
  int64_t N, H, W, K;
  double* work;  // kWorkPlanes padded planes
  double* grad;  // [N,3,H,W]
};

MP_HD int64_t pidx(const Args& g, int64_t n, int64_t i, int64_t j) {
  return (n * (g.H + 2) + i + 1) * (g.W + 2) + j + 1;
}
MP_HD int64_t plane_size(const Args& g) { return g.N * (g.H + 2) * (g.W + 2); }
MP_HD int64_t work_doubles(const Args& g) { return kWorkPlanes * plane_size(g); }
MP_HD V3 get3(const Args& g, int plane, int64_t k) {
  const int64_t sz = plane_size(g);
  const double* p = g.work + plane * sz + k;
  return v3(p[0], p[sz], p[2 * sz]);
}
MP_HD void set3(const Args& g, int plane, int64_t k, V3 v) {
  const int64_t sz = plane_size(g);
  double* p = g.work + plane * sz + k;
  p[0] = v.x;
  p[sz] = v.y;
  p[2 * sz] = v.z;
}
MP_HD V3 in3(const double* x, const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t hw = g.H * g.W, o = n * 3 * hw + i * g.W + j;
  return v3(x[o], x[o + hw], x[o + 2 * hw]);
}
MP_HD double lumped(const Args& g, int64_t i, int64_t j) {
  const double wy = (i == 0 || i == g.H - 1) ? 0.5 : 1.0;
  const double wx = (j == 0 || j == g.W - 1) ? 0.5 : 1.0;
  return wy * wx;
}

// ---- element energies: value and gradient ----------------------------------------------------
// (|e| - L0)^2
MP_HD double stretch_term(V3 e, double L0, V3& ge) {
  const double len = norm(e);
  const double d = len - L0;
  ge = len > 0.0 ? (2.0 * d / len) * e : v3(0.0, 0.0, 0.0);
  return d * d;
}
// psi^2, psi = atan2(u.v, |u x v|) = pi/2 - angle(u, v)
// (a template on the scalar: cloth_hessian_math.h differentiates it once more with dual numbers)
template <class T>
MP_HDI T shear_term(Vec3<T> u, Vec3<T> v, Vec3<T>& gu, Vec3<T>& gv) {
  const T c = dot(u, v);
  const Vec3<T> cr = cross(u, v);
  const T s = norm(cr);
  const T psi = atan2(c, s);
  const T den = s * s + c * c;
  if (den == 0.0) {
    gu = vec3<T>(T(0.0), T(0.0), T(0.0));
    gv = gu;
    return psi * psi;
  }
  const T f = 2.0 * psi / den;
  if (s > 0.0) {
    const T cs = c / s;
    gu = f * (s * v - cs * cross(v, cr));
    gv = f * (s * u - cs * cross(cr, u));
  } else {
    gu = (f * s) * v;
    gv = (f * s) * u;
  }
  return psi * psi;
}
// phi^2, phi = atan2(|e1 x e2|, e1.e2): 0 for straight; gradient via r = phi/s (-> 1/c), smooth at 0
MP_HD double bend_term(V3 e1, V3 e2, V3& g1, V3& g2) {
  const double c = dot(e1, e2);
  const V3 cr = cross(e1, e2);
  const double s = norm(cr);
  const double phi = atan2(s, c);
  const double den = s * s + c * c;
  if (den == 0.0) {
    g1 = v3(0.0, 0.0, 0.0);
    g2 = g1;
    return phi * phi;
  }
  const double r = s > 0.0 ? phi / s : 0.0;
  const double f = 2.0 / den;
  g1 = f * ((c * r) * cross(e2, cr) - (phi * s) * e2);
  g2 = f * ((c * r) * cross(cr, e1) - (phi * s) * e1);
  return phi * phi;
}

// ---- pass A --------------------------------------------------------------------------------
MP_HD void cloth_vertex_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = pidx(g, n, i, j);
  const double hw = (double)(g.H * g.W);
  const bool hard = g.pin_w[(n * g.H + i) * g.W + j] == 1.0;
  if (hard) {
    set3(g, kXN, k, in3(g.pin_x, g, n, i, j));
    set3(g, kACC, k, v3(0.0, 0.0, 0.0));
    g.work[kLOSS * plane_size(g) + k] = 0.0;
    return;
  }
  const double dt = g.dt[n], dt2 = dt * dt;
  const double A = lumped(g, i, j), M = g.mass[n] * A;
  const V3 a = in3(g.a, g, n, i, j);
  const V3 vn = in3(g.v_old, g, n, i, j) + dt * a;
  const V3 xn = in3(g.x_old, g, n, i, j) + dt * vn;
  // inertia, external force, damping: direct d/da
  const V3 f = M * v3(g.gravity[3 * n], g.gravity[3 * n + 1], g.gravity[3 * n + 2]) +
               A * v3(g.wind[3 * n], g.wind[3 * n + 1], g.wind[3 * n + 2]);
  const double gam = g.damping[n];
  double e = 0.5 * dt2 * M * dot(a, a) / hw - dt2 * dot(f, a) / hw + 0.5 * gam * dt * M * dot(vn, vn) / hw;
  V3 ga = (dt2 * M / hw) * a - (dt2 / hw) * f + (gam * dt2 * M / hw) * vn;
  // soft pin and contact: d/dx_new
  V3 gx = v3(0.0, 0.0, 0.0);
  const double w = g.pin_w[(n * g.H + i) * g.W + j];
  if (w > 0.0) {
    const V3 d = xn - in3(g.pin_x, g, n, i, j);
    const double kp = g.k_pin[n] * w / hw;
    e += kp * dot(d, d);
    gx = gx + (2.0 * kp) * d;
  }
  const double kc = g.k_contact[n] / hw, margin = g.margin[n];
  for (int64_t q = 0; q < g.K; ++q) {  // cubic penalty: C^2 at the contact boundary (Newton-friendly)
    double pen, gw[3];
    if (!collider_contact(g.colliders + (n * g.K + q) * kColliderWidth, xn.x, xn.y, xn.z, margin, pen, gw, nullptr))
      continue;
    e += kc * pen * pen * pen;
    gx = gx - (3.0 * kc * pen * pen) * v3(gw[0], gw[1], gw[2]);
  }
  set3(g, kXN, k, xn);
  set3(g, kACC, k, ga + dt2 * gx);
  g.work[kLOSS * plane_size(g) + k] = e;
}

// ---- pass B --------------------------------------------------------------------------------
// Returns the vertex's energy: its per-vertex terms (pass A) plus the elements it owns.
MP_HD double cloth_element_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = pidx(g, n, i, j);
  const int64_t s = g.W + 2;
  const double hw = (double)(g.H * g.W);
  const double L0 = g.rest[n];
  const double cs_v = g.k_stretch[n] / (double)((g.H - 1) * g.W);
  const double cs_h = g.k_stretch[n] / (double)(g.H * (g.W - 1));
  const double csh = g.k_shear[n] / hw, cb = g.k_bend[n] / hw;
  const V3 zero = v3(0.0, 0.0, 0.0);
  const V3 x00 = get3(g, kXN, k);
  const bool has_v = i < g.H - 1, has_h = j < g.W - 1;
  double e = 0.0;
  V3 ev = zero, eh = zero, gev = zero, geh = zero, g1, g2;
  if (has_v) {
    ev = get3(g, kXN, k + s) - x00;
    e += cs_v * stretch_term(ev, L0, g1);
    gev = cs_v * g1;
  }
  if (has_h) {
    eh = get3(g, kXN, k + 1) - x00;
    e += cs_h * stretch_term(eh, L0, g1);
    geh = cs_h * g1;
  }
  V3 gr = zero, gb = zero;
  if (has_v && has_h) {
    const V3 x11 = get3(g, kXN, k + s + 1);
    const V3 left = ev, top = eh;
    const V3 right = x11 - get3(g, kXN, k + 1);
    const V3 bottom = x11 - get3(g, kXN, k + s);
    V3 gl = zero, gt = zero;
    double es = shear_term(left, top, g1, g2);
    gl = gl + g1; gt = gt + g2;
    es += shear_term(left, bottom, g1, g2);
    gl = gl + g1; gb = gb + g2;
    es += shear_term(right, top, g1, g2);
    gr = gr + g1; gt = gt + g2;
    es += shear_term(right, bottom, g1, g2);
    gr = gr + g1; gb = gb + g2;
    e += csh * es;
    gev = gev + csh * gl;
    geh = geh + csh * gt;
    gr = csh * gr;
    gb = csh * gb;
  }
  V3 gbv1 = zero, gbh1 = zero;
  if (i >= 1 && has_v) {
    e += cb * bend_term(x00 - get3(g, kXN, k - s), ev, g1, g2);
    gbv1 = cb * g1;
    gev = gev + cb * g2;
  }
  if (j >= 1 && has_h) {
    e += cb * bend_term(x00 - get3(g, kXN, k - 1), eh, g1, g2);
    gbh1 = cb * g1;
    geh = geh + cb * g2;
  }
  set3(g, kEV, k, gev);
  set3(g, kEH, k, geh);
  set3(g, kQR, k, gr);
  set3(g, kQB, k, gb);
  set3(g, kBV1, k, gbv1);
  set3(g, kBH1, k, gbh1);
  double& energy = g.work[kLOSS * plane_size(g) + k];
  energy += e;
  return energy;
}

// total gradient w.r.t. the vertical edge vector (i,j)->(i+1,j) at flat index k
MP_HD V3 edge_v_grad(const Args& g, int64_t k) {
  const int64_t s = g.W + 2;
  return get3(g, kEV, k) + get3(g, kQR, k - 1) + get3(g, kBV1, k + s);
}
// ... and the horizontal edge (i,j)->(i,j+1)
MP_HD V3 edge_h_grad(const Args& g, int64_t k) {
  const int64_t s = g.W + 2;
  return get3(g, kEH, k) + get3(g, kQB, k - s) + get3(g, kBH1, k + 1);
}

// ---- pass C --------------------------------------------------------------------------------
MP_HD void cloth_grad_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  const int64_t k = pidx(g, n, i, j);
  const int64_t s = g.W + 2;
  const int64_t hw = g.H * g.W, o = n * 3 * hw + i * g.W + j;
  if (g.pin_w[(n * g.H + i) * g.W + j] == 1.0) {
    g.grad[o] = 0.0;
    g.grad[o + hw] = 0.0;
    g.grad[o + 2 * hw] = 0.0;
    return;
  }
  // edges that do not exist (outside the grid) read as 0 from the halo / zeroed entries
  V3 gx = v3(0.0, 0.0, 0.0);
  if (i >= 1) gx = gx + edge_v_grad(g, k - s);
  if (i < g.H - 1) gx = gx - edge_v_grad(g, k);
  if (j >= 1) gx = gx + edge_h_grad(g, k - 1);
  if (j < g.W - 1) gx = gx - edge_h_grad(g, k);
  const double dt = g.dt[n];
  const V3 r = (dt * dt) * gx + get3(g, kACC, k);
  g.grad[o] = r.x;
  g.grad[o + hw] = r.y;
  g.grad[o + 2 * hw] = r.z;
}

}  // namespace cloth
}  // namespace metaphys
