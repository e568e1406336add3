// burgers_loss_grad, CPU. Backward-Euler 2-D coupled Burgers with periodic stencils; unknown
// v = (v_0, v_1) = (x-, y-component); v~ = m*b + (1-m)*v (one mask for both channels). Per channel c:
//   r_c = (v~_c - v_old_c)/dt + (v~_0*Dx_c(v~_c) + v~_1*Dy_c(v~_c)) - mu*L(v~_c)
//   loss = sum_c sum(free*r_c^2) / N, N = max(1, 2*sum free)
// Advection keeps its gradient in both modes, so both need the transposed operator. With
// q_c = free*r_c, Dx_c^T = -Dx_c and L^T = L (periodic):
//   G_d = q_d/dt - Dx_c(v~_0 q_d) - Dy_c(v~_1 q_d) + s_d - mu * (true gradient ? L(q_d) : w_c*q_d)
//   s_0 = sum_c q_c Dx_c(v~_c), s_1 = sum_c q_c Dy_c(v~_c);  grad_d = 2/N * free * G_d
// One fused sweep (stencil.h): rows of (q_d, s_d, v~_0 q_d, v~_1 q_d) are computed into a window
// from a window of v~ rows.
// Twin: metaphys.physics.burgers.burgers_twin.
#include <torch/library.h>

#include "burgers/burgers.h"

namespace metaphys {
namespace {

using stencil::Rows3;
using stencil::RowWindow;

// Fields of the residual window.
enum : int { kQ0 = 0, kQ1, kS0, kS1, kPX0, kPX1, kPY0, kPY1, kFields };

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
  std::vector<double> partial(static_cast<size_t>(N * H), 0.0);

  // v~ rows of both channels (field 0 = x-component, field 1 = y-component).
  auto fill_vt = [&](int64_t n, int64_t i, double* out, int64_t stride) {
    const double* m = M + n * HW + i * W;
    for (int64_t ch = 0; ch < 2; ++ch) {
      const double* b = B + (2 * n + ch) * HW + i * W;
      const double* u = Vp + (2 * n + ch) * HW + i * W;
      double* o = out + ch * stride;
      for (int64_t j = 0; j < W; ++j) o[j] = m[j] * b[j] + (1.0 - m[j]) * u[j];
    }
  };

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    constexpr double wc = stencil::centre<S>();
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      const stencil::OwnedRows own{begin, end};
      RowWindow vt(H, W, true, 2), qw(H, W, true, kFields);
      auto fill_vt_row = [&](int64_t n, int64_t i, double* out) { fill_vt(n, i, out, vt.stride()); };
      auto fill_q = [&](int64_t n, int64_t i, double* out) {
        vt.move_to(n, i, fill_vt_row);
        const Rows3 t[2] = {vt.rows(0), vt.rows(1)};
        const int64_t st = qw.stride();
        const int64_t row = n * H + i, o = i * W;
        const double* m = M + n * HW + o;
        const double mun = MU[n], dtn = DT[n];
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
          out[kQ0 * st + j] = q[0];
          out[kQ1 * st + j] = q[1];
          out[kS0 * st + j] = q[0] * dx[0] + q[1] * dx[1];
          out[kS1 * st + j] = q[0] * dy[0] + q[1] * dy[1];
          out[kPX0 * st + j] = ux * q[0];
          out[kPX1 * st + j] = ux * q[1];
          out[kPY0 * st + j] = uy * q[0];
          out[kPY1 * st + j] = uy * q[1];
        }
        if (own.owns(row)) partial[row] = acc;
      };
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        qw.move_to(n, i, fill_q);
        const int64_t o = i * W;
        const double* m = M + n * HW + o;
        const double mun = MU[n], dtn = DT[n], scale = 2.0 / count[n];
        for (int ch = 0; ch < 2; ++ch) {
          const Rows3 q3 = qw.rows(kQ0 + ch), px = qw.rows(kPX0 + ch), py = qw.rows(kPY0 + ch);
          const double* s = qw.rows(kS0 + ch).mid;
          double* g = G + (2 * n + ch) * HW + o;
          for (int64_t j = 0; j < W; ++j) {
            const double lap = true_grad ? stencil::laplacian<S>(q3, j) : wc * q3.mid[j];
            const double gd = q3.mid[j] / dtn - (stencil::dx_c(px, j) + stencil::dy_c(py, j)) + s[j] - mun * lap;
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
