// burgers_loss_grad, CPU. Backward-Euler 2-D coupled Burgers with periodic stencils; unknown
// v = (v_0, v_1) = (x-, y-component); v~ = m*b + (1-m)*v (one mask for both channels). Per channel c:
//   r_c = (v~_c - v_old_c)/dt + (v~_0*Dx_c(v~_c) + v~_1*Dy_c(v~_c)) - mu*L(v~_c)
//   loss = sum_c sum(free*r_c^2) / max(1, 2*sum free)
// Advection keeps its gradient in both modes, so both need the transposed operator. With
// q_c = free*r_c, Dx_c^T = -Dx_c and L^T = L (periodic):
//   G_d = q_d/dt - Dx_c(v~_0 q_d) - Dy_c(v~_1 q_d) + [d=0] sum_c q_c Dx_c(v~_c) + [d=1] sum_c q_c Dy_c(v~_c)
//         - mu * (true gradient ? L(q_d) : w_c*q_d)
//   grad_d = 2/N * free * G_d
// Twin: metaphys.physics.burgers.burgers_twin.
#include <torch/library.h>

#include "burgers/burgers.h"

namespace metaphys {
namespace {

using stencil::Rows3;
using stencil::RowWindow;

std::tuple<at::Tensor, at::Tensor> burgers_loss_grad_cpu(const at::Tensor& v, const at::Tensor& v_old,
                                                         const at::Tensor& mask, const at::Tensor& bc,
                                                         const at::Tensor& mu, const at::Tensor& dt,
                                                         int64_t stencil_size, bool true_grad) {
  check_burgers_inputs(v, v_old, mask, bc, mu, dt, stencil_size);
  stencil::check_cpu(v, "burgers_loss_grad");
  stencil::check_param_values(mu, "mu", /*positive=*/false);
  stencil::check_param_values(dt, "dt", /*positive=*/true);
  const int64_t N = v.size(0), H = v.size(2), W = v.size(3);
  const int64_t HW = H * W;
  at::Tensor loss = at::empty({N}, v.options());
  at::Tensor grad = at::empty_like(v);
  const std::vector<double> count = stencil::free_counts(mask, 2);

  const double* Vp = v.const_data_ptr<double>();
  const double* V0 = v_old.const_data_ptr<double>();
  const double* M = mask.const_data_ptr<double>();
  const double* B = bc.const_data_ptr<double>();
  const double* MU = mu.const_data_ptr<double>();
  const double* DT = dt.const_data_ptr<double>();
  double* G = grad.mutable_data_ptr<double>();
  // Scratch planes per sample: 0-1 q_c, 2-3 v~_c, 4-5 s_d = sum_c q_c * (Dx_c | Dy_c)(v~_c).
  at::Tensor scratch = at::empty({N, 6, H, W}, v.options());
  double* T = scratch.mutable_data_ptr<double>();
  auto plane = [&](int64_t n, int64_t k) { return T + (6 * n + k) * HW; };
  std::vector<double> partial(static_cast<size_t>(N * H), 0.0);

  auto fill_vt = [&](int64_t ch) {
    return [&, ch](int64_t n, int64_t i, double* out) {
      const double* m = M + n * HW + i * W;
      const double* b = B + (2 * n + ch) * HW + i * W;
      const double* u = Vp + (2 * n + ch) * HW + i * W;
      for (int64_t j = 0; j < W; ++j) out[j] = m[j] * b[j] + (1.0 - m[j]) * u[j];
    };
  };
  const auto fill_vt0 = fill_vt(0), fill_vt1 = fill_vt(1);

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    constexpr double wc = stencil::centre<S>();
    // Pass 1: residuals, loss partials and the pointwise parts of the gradient.
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      RowWindow w0(H, W, true), w1(H, W, true);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        w0.move_to(n, i, fill_vt0);
        w1.move_to(n, i, fill_vt1);
        const Rows3 t[2] = {w0.rows(), w1.rows()};
        const int64_t o = i * W;
        const double* m = M + n * HW + o;
        const double mun = MU[n], dtn = DT[n];
        double* q0 = plane(n, 0) + o;
        double* q1 = plane(n, 1) + o;
        double* s0 = plane(n, 4) + o;
        double* s1 = plane(n, 5) + o;
        std::copy(t[0].mid, t[0].mid + W, plane(n, 2) + o);
        std::copy(t[1].mid, t[1].mid + W, plane(n, 3) + o);
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double fr = 1.0 - m[j];
          const double ux = t[0].mid[j], uy = t[1].mid[j];
          double q[2], dx[2], dy[2];
          for (int ch = 0; ch < 2; ++ch) {
            dx[ch] = stencil::dx_c(t[ch], j);
            dy[ch] = stencil::dy_c(t[ch], j);
            const double r = (t[ch].mid[j] - V0[(2 * n + ch) * HW + o + j]) / dtn + (ux * dx[ch] + uy * dy[ch]) -
                             mun * stencil::laplacian<S>(t[ch], j);
            q[ch] = fr * r;
            acc += q[ch] * r;
          }
          q0[j] = q[0];
          q1[j] = q[1];
          s0[j] = q[0] * dx[0] + q[1] * dx[1];
          s1[j] = q[0] * dy[0] + q[1] * dy[1];
        }
        partial[row] = acc;
      }
    });
    // Pass 2: gradient through the transposed advection (and Laplacian for the true gradient).
    auto fill_prod = [&](int64_t vt_plane, int64_t q_plane) {
      return [&, vt_plane, q_plane](int64_t n, int64_t i, double* out) {
        const double* a = plane(n, vt_plane) + i * W;
        const double* q = plane(n, q_plane) + i * W;
        for (int64_t j = 0; j < W; ++j) out[j] = a[j] * q[j];
      };
    };
    auto fill_copy = [&](int64_t k) {
      return [&, k](int64_t n, int64_t i, double* out) {
        const double* src = plane(n, k) + i * W;
        std::copy(src, src + W, out);
      };
    };
    const auto fx0 = fill_prod(2, 0), fx1 = fill_prod(2, 1), fy0 = fill_prod(3, 0), fy1 = fill_prod(3, 1);
    const auto fq0 = fill_copy(0), fq1 = fill_copy(1);
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      RowWindow px0(H, W, true), px1(H, W, true), py0(H, W, true), py1(H, W, true);
      RowWindow wq0(H, W, true), wq1(H, W, true);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        px0.move_to(n, i, fx0);
        px1.move_to(n, i, fx1);
        py0.move_to(n, i, fy0);
        py1.move_to(n, i, fy1);
        if (true_grad) {
          wq0.move_to(n, i, fq0);
          wq1.move_to(n, i, fq1);
        }
        const Rows3 px[2] = {px0.rows(), px1.rows()};
        const Rows3 py[2] = {py0.rows(), py1.rows()};
        const Rows3 wq[2] = {wq0.rows(), wq1.rows()};
        const int64_t o = i * W;
        const double* m = M + n * HW + o;
        const double mun = MU[n], dtn = DT[n], scale = 2.0 / count[n];
        for (int ch = 0; ch < 2; ++ch) {
          const double* q = plane(n, ch) + o;
          const double* s = plane(n, 4 + ch) + o;
          double* g = G + (2 * n + ch) * HW + o;
          for (int64_t j = 0; j < W; ++j) {
            const double lap = true_grad ? stencil::laplacian<S>(wq[ch], j) : wc * q[j];
            const double gd = q[j] / dtn - (stencil::dx_c(px[ch], j) + stencil::dy_c(py[ch], j)) + s[j] - mun * lap;
            g[j] = scale * (1.0 - m[j]) * gd;
          }
        }
      }
    });
  });

  double* L = loss.mutable_data_ptr<double>();
  stencil::sum_rows(partial, N, H, L);
  for (int64_t n = 0; n < N; ++n) L[n] /= count[n];
  return {loss, grad};
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("burgers_loss_grad", &metaphys::burgers_loss_grad_cpu); }
