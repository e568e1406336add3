// cloth_hessian: the Hessian of the cloth loss (the kernel cloth_loss_grad's terms, same
// normalization) w.r.t. the acceleration, as 13 3x3 blocks per vertex (its own and its 12 stencil
// neighbours'). Shared by the CPU kernel (cloth_hessian_cpu.cpp) and the CUDA kernel
// (cloth_hessian_cuda.cu): plain C++ on raw pointers, no ATen. PyTorch twin:
// metaphys/physics/cloth_hessian.py.
//
// blocks[n, k, r, c, i, j] = d^2 loss_n / d a[n, r, i, j] d a[n, c, i + di_k, j + dj_k], offsets k in
// the order of kOffsetDi/kOffsetDj ((0,0) then ClothProblem.hessian_offsets); zero outside the
// grid and in the rows and columns of hard-pinned vertices (pin_w == 1). x_new = x_old + dt v_old +
// dt^2 a, so position-space Hessians get the factor dt^4.
//
// Element Hessians, all in closed form: stretch springs; each shear term psi^2 and each bend term
// phi^2 is a function f(c) of the cosine c of the angle between its two edge vectors, so its 6x6
// Hessian is f'' grad c grad c^T + f' Hess c (pair_hessian; replacing forward-mode dual numbers of
// the gradient made the whole kernel 15-20 % faster: 32^2 2.2 -> 1.9 ms, 128^2 44.8 -> 35.9 ms).
// project (Projection): kExact; kProjectElements: every element's Hessian made PSD on its own
// (stretch: max(0, 1 - L0/|e|) on the transverse part; shear, bend: negative eigenvalues of the 6x6
// clamped to 0 by Jacobi; contact: the curvature of the collider's distance dropped; every kind of
// the collider table); kProjectSpringsContacts: the springs' and contacts' projection only (their
// closed forms), shear and bend exact -- Newton-Krylov's projected matrix, at the exact one's cost.
//
// Two passes over all vertices (n, i, j):
//   pass 1  the elements owned by vertex (i,j) -- its vertical and horizontal edge, quad (i,j),
//           the bend hinges centred at (i,j) -- as vertex-space blocks in position space, into
//           the vertex's own kHPlanes doubles of the work buffer [N, H, W, kHPlanes]; elements
//           that do not exist store 0                                  (cloth_hessian_elements_at)
//   pass 2  gather per vertex, in a fixed order, the blocks of every element that contains it,
//           add the per-vertex terms (inertia, damping, soft pin, contact), scale, write the
//           13 blocks                                                  (cloth_hessian_gather_at)
#pragma once
#include "cloth/cloth_math.h"

namespace metaphys {
namespace cloth {

// ---- the angle functions of the shear and bend terms -------------------------------------------
// Both terms are f(c) of c = u^.v^ (the cosine of the angle between the two edge vectors): shear psi^2
// with psi = asin(c) (= atan2(u.v, |u x v|)), bend phi^2 with phi = acos(c) (= atan2(|u x v|, u.v)). With
// s = sqrt(1 - c^2) = |u x v| / (|u||v|) (the angles' sine / cosine):
//   shear  f' = 2 psi / s                 f'' = 2 / s^2 + 2 psi c / s^3
//   bend   f' = -2 phi / s                f'' = 2 (1 - phi c / s) / s^2
// The bend's are smooth at phi = 0 (s = 0): phi / s -> 1 and (1 - phi cot phi) / sin^2 phi -> 1/3,
// taken from their series below phi = 0.1 (terms to phi^10: relative error < 1e-15 there).
MP_HD void shear_fd(double c, double s, double& f1, double& f2) {
  const double psi = atan2(c, s);
  f1 = 2.0 * psi / s;
  f2 = 2.0 / (s * s) + 2.0 * psi * c / (s * s * s);
}
MP_HD void bend_fd(double c, double s, double& f1, double& f2) {
  const double phi = atan2(s, c);
  if (phi < 0.1) {
    const double p2 = phi * phi;
    // phi / sin(phi) = 1 + p2/6 + 7 p2^2/360 + 31 p2^3/15120 + 127 p2^4/604800 + 73 p2^5/3421440
    const double r = 1.0 + p2 * (1.0 / 6 + p2 * (7.0 / 360 + p2 * (31.0 / 15120 + p2 * (127.0 / 604800 +
                     p2 * (73.0 / 3421440)))));
    // 1 - phi cot(phi) = p2/3 + p2^2/45 + 2 p2^3/945 + p2^4/4725 + 2 p2^5/93555, over sin^2 = (phi / r)^2
    const double num = 1.0 / 3 + p2 * (1.0 / 45 + p2 * (2.0 / 945 + p2 * (1.0 / 4725 + p2 * (2.0 / 93555))));
    f1 = -2.0 * r;
    f2 = 2.0 * num * r * r;
    return;
  }
  f1 = -2.0 * phi / s;
  f2 = 2.0 * (1.0 - phi * c / s) / (s * s);
}

// ---- small symmetric matrices ------------------------------------------------------------------
// Negative eigenvalues of the symmetric A clamped to 0 (cyclic Jacobi); A is left bit-for-bit as
// it is when it has none.
template <int n>
MP_HD void psd_project(double (&A)[n][n]) {
  double B[n][n], V[n][n];
  double scale = 0.0;
  for (int p = 0; p < n; ++p) {
    for (int q = 0; q < n; ++q) {
      B[p][q] = A[p][q];
      V[p][q] = p == q ? 1.0 : 0.0;
      scale += A[p][q] * A[p][q];
    }
  }
  if (!(scale > 0.0)) return;
  // a rotation only for off-diagonals above round-off of the whole matrix; done when a sweep has none
  const double tiny = 1e-32 * scale;
  for (int sweep = 0; sweep < 16; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < n; ++p) {
      for (int q = p + 1; q < n; ++q) {
        const double apq = B[p][q];
        if (apq * apq <= tiny) {
          B[p][q] = B[q][p] = 0.0;
          continue;
        }
        rotated = true;
        const double theta = (B[q][q] - B[p][p]) / (2.0 * apq);
        const double t = fabs(theta) > 1e150 ? 0.5 / theta
                                              : (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q of B J
          const double bkp = B[k][p], bkq = B[k][q];
          B[k][p] = c * bkp - s * bkq;
          B[k][q] = s * bkp + c * bkq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q of J^T (B J)
          const double bpk = B[p][k], bqk = B[q][k];
          B[p][k] = c * bpk - s * bqk;
          B[q][k] = s * bpk + c * bqk;
        }
        B[p][q] = B[q][p] = 0.0;
        for (int k = 0; k < n; ++k) {  // eigenvectors: V J
          const double vkp = V[k][p], vkq = V[k][q];
          V[k][p] = c * vkp - s * vkq;
          V[k][q] = s * vkp + c * vkq;
        }
      }
    }
    if (!rotated) break;
  }
  bool negative = false;
  for (int p = 0; p < n; ++p) negative = negative || B[p][p] < 0.0;
  if (!negative) return;
  for (int p = 0; p < n; ++p) {
    for (int q = p; q < n; ++q) {
      double v = 0.0;
      for (int k = 0; k < n; ++k) v += (B[k][k] > 0.0 ? B[k][k] : 0.0) * V[p][k] * V[q][k];
      A[p][q] = v;
      A[q][p] = v;
    }
  }
}

// ---- element Hessians (position space) ---------------------------------------------------------
// c (|e| - L0)^2 w.r.t. e: 2c [e^ e^T + (1 - L0/|e|)(I - e^ e^T)]; projected: max(0, 1 - L0/|e|)
MP_HD void stretch_hessian(V3 e, double L0, double c, bool project, double* S) {
  const double len = norm(e);
  if (!(len > 0.0)) {
    for (int q = 0; q < 9; ++q) S[q] = 0.0;
    return;
  }
  const double u[3] = {e.x / len, e.y / len, e.z / len};
  double t = 1.0 - L0 / len;
  if (project && t < 0.0) t = 0.0;
  for (int r = 0; r < 3; ++r)
    for (int q = 0; q < 3; ++q) S[3 * r + q] = 2.0 * c * ((1.0 - t) * u[r] * u[q] + (r == q ? t : 0.0));
}

enum PairKind : int { kShearPair = 0, kBendPair = 1 };
// k * f(c) (shear psi^2 or bend phi^2 of the edge vectors (u, v), c = u^.v^): its 6x6 Hessian (variables u
// then v) in closed form, k (f'' gc gc^T + f' Hc) with gc, Hc the gradient and Hessian of c:
//   gc_u = (v^ - c u^) / |u|,  gc_v = (u^ - c v^) / |v|
//   Hc_uu = -(u^ gc_u^T + gc_u u^T + c (I - u^u^T) / |u|) / |u|   (Hc_vv likewise)
//   Hc_uv = (I - u^u^T - v^v^T + c u^v^T) / (|u||v|)
// projected to PSD when asked; 0 where an edge has no length or (shear) the edges are parallel: the
// kernel's gradient of such a term is 0 too
template <int KIND>
MP_HD void pair_hessian(V3 u, V3 v, double k, bool project, double (&Hm)[6][6]) {
  for (int p = 0; p < 6; ++p)
    for (int q = 0; q < 6; ++q) Hm[p][q] = 0.0;
  const double lu = norm(u), lv = norm(v);
  if (!(lu > 0.0 && lv > 0.0)) return;
  const double uh[3] = {u.x / lu, u.y / lu, u.z / lu}, vh[3] = {v.x / lv, v.y / lv, v.z / lv};
  const double s = norm(cross(u, v)) / (lu * lv);
  const double c = dot(u, v) / (lu * lv);
  double f1, f2;
  if (KIND == kShearPair) {
    if (!(s > 0.0)) return;
    shear_fd(c, s, f1, f2);
  } else {
    if (!(s > 0.0) && c <= 0.0) return;   // folded flat back onto itself: no direction to bend towards
    bend_fd(c, s, f1, f2);
  }
  double g[6];
  for (int r = 0; r < 3; ++r) {
    g[r] = (vh[r] - c * uh[r]) / lu;
    g[3 + r] = (uh[r] - c * vh[r]) / lv;
  }
  const double iu2 = 1.0 / (lu * lu), iv2 = 1.0 / (lv * lv), iuv = 1.0 / (lu * lv);
  for (int r = 0; r < 3; ++r) {
    for (int q = 0; q < 3; ++q) {
      const double id = r == q ? 1.0 : 0.0;
      const double huu = -(uh[r] * g[q] * lu + g[r] * lu * uh[q] + c * (id - uh[r] * uh[q])) * iu2;
      const double hvv = -(vh[r] * g[3 + q] * lv + g[3 + r] * lv * vh[q] + c * (id - vh[r] * vh[q])) * iv2;
      const double huv = (id - uh[r] * uh[q] - vh[r] * vh[q] + c * uh[r] * vh[q]) * iuv;
      Hm[r][q] = k * (f2 * g[r] * g[q] + f1 * huu);
      Hm[3 + r][3 + q] = k * (f2 * g[3 + r] * g[3 + q] + f1 * hvv);
      Hm[r][3 + q] = k * (f2 * g[r] * g[3 + q] + f1 * huv);
      Hm[3 + q][r] = Hm[r][3 + q];
    }
  }
  if (project) psd_project<6>(Hm);
}

// ---- the work buffer and the offsets -----------------------------------------------------------
// per owner vertex, vertex-space 3x3 blocks [a][b][r][c] of its elements (position space, scaled)
enum HPlane : int {
  kHSV = 0,     // vertical edge (i,j)->(i+1,j): its 3x3 spring Hessian S (blocks +-S)
  kHSH = 9,     // horizontal edge (i,j)->(i,j+1)
  kHQ = 18,     // quad (i,j), 4 shear terms: vertices (0,0), (0,1), (1,0), (1,1): 4 x 4 blocks
  kHBV = 162,   // bend hinge centred at (i,j) along the column: vertices (-1,0), (0,0), (1,0)
  kHBH = 243,   // ... along the row: (0,-1), (0,0), (0,1)
  kHPlanes = 324
};
constexpr int kHOffsets = 13;

MP_HD int offset_di(int k) {
  return k < 5 ? 0 : k == 5 ? 1 : k == 6 ? -1 : k == 7 ? 2 : k == 8 ? -2 : k < 11 ? 1 : -1;
}
MP_HD int offset_dj(int k) {
  return k == 0 ? 0 : k == 1 ? 1 : k == 2 ? -1 : k == 3 ? 2 : k == 4 ? -2 : k < 9 ? 0 : (k % 2 == 1 ? 1 : -1);
}
MP_HD int offset_index(int di, int dj) {
  if (di == 0) return dj == 0 ? 0 : dj == 1 ? 1 : dj == -1 ? 2 : dj == 2 ? 3 : dj == -2 ? 4 : -1;
  if (dj == 0) return di == 1 ? 5 : di == -1 ? 6 : di == 2 ? 7 : di == -2 ? 8 : -1;
  if (di == 1) return dj == 1 ? 9 : dj == -1 ? 10 : -1;
  if (di == -1) return dj == 1 ? 11 : dj == -1 ? 12 : -1;
  return -1;
}

enum Projection : int { kExact = 0, kProjectElements = 1, kProjectSpringsContacts = 2 };
struct HArgs {
  Args g;          // the inputs (cloth_args); g.work and g.grad unused
  Projection project;
  double* work;    // [N, H, W, kHPlanes]
  double* blocks;  // [N, 13, 3, 3, H, W]
};
MP_HD int64_t hessian_work_doubles(const HArgs& h) { return h.g.N * h.g.H * h.g.W * kHPlanes; }
MP_HD double* hwork(const HArgs& h, int64_t n, int64_t i, int64_t j) {
  return h.work + ((n * h.g.H + i) * h.g.W + j) * kHPlanes;
}

// x_new of vertex (i, j), exactly as cloth_vertex_at computes it
MP_HD V3 xnew_at(const Args& g, int64_t n, int64_t i, int64_t j) {
  if (g.pin_w[(n * g.H + i) * g.W + j] == 1.0) return in3(g.pin_x, g, n, i, j);
  const double dt = g.dt[n];
  const V3 a = in3(g.a, g, n, i, j);
  const V3 vn = in3(g.v_old, g, n, i, j) + dt * a;
  return in3(g.x_old, g, n, i, j) + dt * vn;
}

// the 6x6 Hessian of a pair of edges (p0 -> q0, p1 -> q1; local vertex numbers) added to the
// element's nv x nv vertex blocks
MP_HD void scatter_pair(double* blk, int nv, const double (&Hm)[6][6], int p0, int q0, int p1, int q1) {
  const int ends[2][2] = {{p0, q0}, {p1, q1}};
  for (int al = 0; al < 2; ++al)
    for (int ea = 0; ea < 2; ++ea)
      for (int be = 0; be < 2; ++be)
        for (int eb = 0; eb < 2; ++eb) {
          const double sg = ea == eb ? 1.0 : -1.0;
          double* o = blk + (ends[al][ea] * nv + ends[be][eb]) * 9;
          for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c) o[3 * r + c] += sg * Hm[3 * al + r][3 * be + c];
        }
}

// ---- pass 1 ------------------------------------------------------------------------------------
MP_HD void cloth_hessian_elements_at(const HArgs& h, int64_t n, int64_t i, int64_t j) {
  const Args& g = h.g;
  double* w = hwork(h, n, i, j);
  for (int q = 0; q < kHPlanes; ++q) w[q] = 0.0;
  const double hw = (double)(g.H * g.W);
  const double L0 = g.rest[n];
  const double cs_v = g.k_stretch[n] / (double)((g.H - 1) * g.W);
  const double cs_h = g.k_stretch[n] / (double)(g.H * (g.W - 1));
  const double csh = g.k_shear[n] / hw, cb = g.k_bend[n] / hw;
  const bool has_v = i < g.H - 1, has_h = j < g.W - 1;
  const V3 x00 = xnew_at(g, n, i, j);
  V3 ev = x00, eh = x00;
  if (has_v) {
    ev = xnew_at(g, n, i + 1, j) - x00;
    stretch_hessian(ev, L0, cs_v, h.project != kExact, w + kHSV);
  }
  if (has_h) {
    eh = xnew_at(g, n, i, j + 1) - x00;
    stretch_hessian(eh, L0, cs_h, h.project != kExact, w + kHSH);
  }
  double Hm[6][6];
  const bool pairs_psd = h.project == kProjectElements;
  if (has_v && has_h) {
    const V3 x11 = xnew_at(g, n, i + 1, j + 1);
    const V3 left = ev, top = eh;
    const V3 right = x11 - xnew_at(g, n, i, j + 1);
    const V3 bottom = x11 - xnew_at(g, n, i + 1, j);
    // local vertices 0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1): left 0->2, top 0->1, right 1->3, bottom 2->3
    pair_hessian<kShearPair>(left, top, csh, pairs_psd, Hm);
    scatter_pair(w + kHQ, 4, Hm, 0, 2, 0, 1);
    pair_hessian<kShearPair>(left, bottom, csh, pairs_psd, Hm);
    scatter_pair(w + kHQ, 4, Hm, 0, 2, 2, 3);
    pair_hessian<kShearPair>(right, top, csh, pairs_psd, Hm);
    scatter_pair(w + kHQ, 4, Hm, 1, 3, 0, 1);
    pair_hessian<kShearPair>(right, bottom, csh, pairs_psd, Hm);
    scatter_pair(w + kHQ, 4, Hm, 1, 3, 2, 3);
  }
  // hinges: local vertices 0 (before), 1 (centre), 2 (after); e1 0->1, e2 1->2
  if (i >= 1 && has_v) {
    pair_hessian<kBendPair>(x00 - xnew_at(g, n, i - 1, j), ev, cb, pairs_psd, Hm);
    scatter_pair(w + kHBV, 3, Hm, 0, 1, 1, 2);
  }
  if (j >= 1 && has_h) {
    pair_hessian<kBendPair>(x00 - xnew_at(g, n, i, j - 1), eh, cb, pairs_psd, Hm);
    scatter_pair(w + kHBH, 3, Hm, 0, 1, 1, 2);
  }
}

// per-vertex position-space terms of a free vertex: soft pin and contacts (P += 3x3)
MP_HD void vertex_hessian(const Args& g, int64_t n, int64_t i, int64_t j, V3 xn, bool project, double* P) {
  const double hw = (double)(g.H * g.W);
  const double w = g.pin_w[(n * g.H + i) * g.W + j];
  if (w > 0.0) {
    const double kp = g.k_pin[n] * w / hw;
    for (int r = 0; r < 3; ++r) P[4 * r] += 2.0 * kp;
  }
  const double kc = g.k_contact[n] / hw, margin = g.margin[n];
  // each collider row: 6 kc pen n n^T - 3 kc pen^2 Hd (n, Hd: the gradient and Hessian of its distance);
  // projected: the curvature part dropped (for the convex kinds it is the only negative part)
  for (int64_t q = 0; q < g.K; ++q) {
    double pen, gw[3], Hw[9];
    if (!collider_contact(g.colliders + (n * g.K + q) * kColliderWidth, xn.x, xn.y, xn.z, margin, pen, gw,
                          project ? nullptr : Hw))
      continue;
    const double curv = project ? 0.0 : 3.0 * kc * pen * pen;
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c) P[3 * r + c] += 6.0 * kc * pen * gw[r] * gw[c] - (project ? 0.0 : curv * Hw[3 * r + c]);
  }
}

// ---- pass 2 ------------------------------------------------------------------------------------
// the 13 x 9 values of vertex (i, j) go to out[(k * 9 + q) * stride]: straight into ``blocks`` (stride
// H W), or into a row buffer that the caller writes out row by row (the CPU kernel: 117 interleaved
// output streams cost more than the arithmetic)
MP_HD void cloth_hessian_gather_at(const HArgs& h, int64_t n, int64_t i, int64_t j, double* out, int64_t stride) {
  const Args& g = h.g;
  const int64_t H = g.H, W = g.W;
  if (g.pin_w[(n * H + i) * W + j] == 1.0) {
    for (int q = 0; q < kHOffsets * 9; ++q) out[q * stride] = 0.0;
    return;
  }
  double X[kHOffsets][9];
  for (int k = 0; k < kHOffsets; ++k)
    for (int q = 0; q < 9; ++q) X[k][q] = 0.0;
  // springs: vertices (0,0), (1,0) [vertical] or (0,0), (0,1) [horizontal]; blocks +S, -S
MP_UNROLL(2)
  for (int a = 0; a < 2; ++a) {
    if (i - a >= 0) {
      const double* S = hwork(h, n, i - a, j) + kHSV;
MP_UNROLL(2)
      for (int b = 0; b < 2; ++b) {
        const int k = offset_index(b - a, 0);
        const double sg = a == b ? 1.0 : -1.0;
        for (int q = 0; q < 9; ++q) X[k][q] += sg * S[q];
      }
    }
    if (j - a >= 0) {
      const double* S = hwork(h, n, i, j - a) + kHSH;
MP_UNROLL(2)
      for (int b = 0; b < 2; ++b) {
        const int k = offset_index(0, b - a);
        const double sg = a == b ? 1.0 : -1.0;
        for (int q = 0; q < 9; ++q) X[k][q] += sg * S[q];
      }
    }
  }
  // quads: this vertex as local vertex a = 2 ai + aj of quad (i - ai, j - aj)
MP_UNROLL(4)
  for (int a = 0; a < 4; ++a) {
    const int ai = a >> 1, aj = a & 1;
    if (i - ai < 0 || j - aj < 0) continue;
    const double* Q = hwork(h, n, i - ai, j - aj) + kHQ + a * 4 * 9;
MP_UNROLL(4)
    for (int b = 0; b < 4; ++b) {
      const int k = offset_index((b >> 1) - ai, (b & 1) - aj);
      for (int q = 0; q < 9; ++q) X[k][q] += Q[b * 9 + q];
    }
  }
  // hinges: this vertex as local vertex a of the hinge centred a - 1 before it
MP_UNROLL(3)
  for (int a = 0; a < 3; ++a) {
    const int64_t ci = i - (a - 1), cj = j - (a - 1);
    if (ci >= 0 && ci < H) {
      const double* Bv = hwork(h, n, ci, j) + kHBV + a * 3 * 9;
MP_UNROLL(3)
      for (int b = 0; b < 3; ++b) {
        const int k = offset_index(b - a, 0);
        for (int q = 0; q < 9; ++q) X[k][q] += Bv[b * 9 + q];
      }
    }
    if (cj >= 0 && cj < W) {
      const double* Bh = hwork(h, n, i, cj) + kHBH + a * 3 * 9;
MP_UNROLL(3)
      for (int b = 0; b < 3; ++b) {
        const int k = offset_index(0, b - a);
        for (int q = 0; q < 9; ++q) X[k][q] += Bh[b * 9 + q];
      }
    }
  }
  vertex_hessian(g, n, i, j, xnew_at(g, n, i, j), h.project != kExact, X[0]);
  const double dt = g.dt[n], dt2 = dt * dt, dt4 = dt2 * dt2;
  const double M = g.mass[n] * lumped(g, i, j);
  const double diag = dt2 * M / (double)(H * W) * (1.0 + g.damping[n] * dt);  // inertia + damping (a-space)
MP_UNROLL(13)
  for (int k = 0; k < kHOffsets; ++k) {
    const int64_t ni = i + offset_di(k), nj = j + offset_dj(k);
    const bool live = ni >= 0 && ni < H && nj >= 0 && nj < W && g.pin_w[(n * H + ni) * W + nj] != 1.0;
    for (int q = 0; q < 9; ++q) {
      double v = 0.0;
      if (live) v = dt4 * X[k][q] + (k == 0 && q % 4 == 0 ? diag : 0.0);
      out[(k * 9 + q) * stride] = v;
    }
  }
}

}  // namespace cloth
}  // namespace metaphys
