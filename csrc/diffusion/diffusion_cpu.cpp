// diffusion_loss_grad, CPU. Backward-Euler advection-diffusion residual (velocity channels:
// 0 = v_y, 1 = v_x), with c~ = m*b + (1-m)*c:
//   r = (c~ - c_old)/dt - D*L(c~) + v_x*Dx_c(c~) + v_y*Dy_c(c~) + div(v)*c~ - R,  div(v) = Dx_c v_x + Dy_c v_y
// loss = sum(free*r^2) / max(1, sum free). With q = free*r and N that denominator:
//   pseudo gradient (L's neighbours and v.grad c detached): 2/N * free * (1/dt - D*w_c + div v) * q
//   true gradient: 2/N * free * (q/dt - D*L(q) - Dx_c(v_x q) - Dy_c(v_y q) + div(v)*q)
//   (L^T = L and Dx_c^T = -Dx_c under zero padding).
// Twin: metaphys.physics.diffusion.diffusion_twin.
#include <torch/library.h>

#include "diffusion/diffusion.h"

namespace metaphys {
namespace {

using stencil::Rows3;
using stencil::RowWindow;

std::tuple<at::Tensor, at::Tensor> diffusion_loss_grad_cpu(const at::Tensor& c, const at::Tensor& c_old,
                                                           const at::Tensor& mask, const at::Tensor& bc,
                                                           const at::Tensor& vel, const at::Tensor& source,
                                                           const at::Tensor& D, const at::Tensor& dt,
                                                           int64_t stencil_size, bool true_grad) {
  check_diffusion_inputs(c, c_old, mask, bc, vel, source, D, dt, stencil_size);
  stencil::check_cpu(c, "diffusion_loss_grad");
  stencil::check_param_values(D, "D", /*positive=*/false);
  stencil::check_param_values(dt, "dt", /*positive=*/true);
  const int64_t N = c.size(0), H = c.size(2), W = c.size(3);
  const int64_t HW = H * W;
  at::Tensor loss = at::empty({N}, c.options());
  at::Tensor grad = at::empty_like(c);
  const std::vector<double> count = stencil::free_counts(mask, 1);

  const double* C = c.const_data_ptr<double>();
  const double* C0 = c_old.const_data_ptr<double>();
  const double* M = mask.const_data_ptr<double>();
  const double* B = bc.const_data_ptr<double>();
  const double* V = vel.const_data_ptr<double>();
  const double* R = source.const_data_ptr<double>();
  const double* Dp = D.const_data_ptr<double>();
  const double* DT = dt.const_data_ptr<double>();
  double* G = grad.mutable_data_ptr<double>();
  at::Tensor qbuf = true_grad ? at::empty({N, 2, H, W}, c.options()) : at::Tensor();  // q, div v
  double* Q = true_grad ? qbuf.mutable_data_ptr<double>() : nullptr;
  std::vector<double> partial(static_cast<size_t>(N * H), 0.0);

  auto fill_ct = [&](int64_t n, int64_t i, double* out) {
    const int64_t o = n * HW + i * W;
    for (int64_t j = 0; j < W; ++j) out[j] = M[o + j] * B[o + j] + (1.0 - M[o + j]) * C[o + j];
  };
  auto fill_vy = [&](int64_t n, int64_t i, double* out) {
    const double* src = V + 2 * n * HW + i * W;
    std::copy(src, src + W, out);
  };
  auto fill_vx = [&](int64_t n, int64_t i, double* out) {
    const double* src = V + (2 * n + 1) * HW + i * W;
    std::copy(src, src + W, out);
  };

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    constexpr double wc = stencil::centre<S>();
    // Pass 1: residual, loss partials, pseudo-gradient (or q and div v for the true gradient).
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      RowWindow ct(H, W, false), vy(H, W, false), vx(H, W, false);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        ct.move_to(n, i, fill_ct);
        vy.move_to(n, i, fill_vy);
        vx.move_to(n, i, fill_vx);
        const Rows3 c3 = ct.rows(), y3 = vy.rows(), x3 = vx.rows();
        const int64_t o = n * HW + i * W;
        const double Dn = Dp[n], dtn = DT[n], scale = 2.0 / count[n];
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double fr = 1.0 - M[o + j];
          const double cc = c3.mid[j];
          const double div = stencil::dx_c(x3, j) + stencil::dy_c(y3, j);
          const double r = (cc - C0[o + j]) / dtn - Dn * stencil::laplacian<S>(c3, j) +
                           x3.mid[j] * stencil::dx_c(c3, j) + y3.mid[j] * stencil::dy_c(c3, j) + div * cc -
                           R[o + j];
          const double q = fr * r;
          acc += q * r;
          if (true_grad) {
            Q[2 * n * HW + i * W + j] = q;
            Q[(2 * n + 1) * HW + i * W + j] = div;
          } else {
            G[o + j] = scale * fr * (1.0 / dtn - Dn * wc + div) * q;
          }
        }
        partial[row] = acc;
      }
    });
    if (!true_grad) return;
    // Pass 2: the transposed operator applied to q.
    auto fill_q = [&](int64_t n, int64_t i, double* out) {
      const double* src = Q + 2 * n * HW + i * W;
      std::copy(src, src + W, out);
    };
    auto fill_vxq = [&](int64_t n, int64_t i, double* out) {
      const double* q = Q + 2 * n * HW + i * W;
      const double* v = V + (2 * n + 1) * HW + i * W;
      for (int64_t j = 0; j < W; ++j) out[j] = v[j] * q[j];
    };
    auto fill_vyq = [&](int64_t n, int64_t i, double* out) {
      const double* q = Q + 2 * n * HW + i * W;
      const double* v = V + 2 * n * HW + i * W;
      for (int64_t j = 0; j < W; ++j) out[j] = v[j] * q[j];
    };
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      RowWindow qw(H, W, false), xq(H, W, false), yq(H, W, false);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        qw.move_to(n, i, fill_q);
        xq.move_to(n, i, fill_vxq);
        yq.move_to(n, i, fill_vyq);
        const Rows3 q3 = qw.rows(), xq3 = xq.rows(), yq3 = yq.rows();
        const int64_t o = n * HW + i * W;
        const double* div = Q + (2 * n + 1) * HW + i * W;
        const double Dn = Dp[n], dtn = DT[n], scale = 2.0 / count[n];
        for (int64_t j = 0; j < W; ++j) {
          const double q = q3.mid[j];
          const double g = q / dtn - Dn * stencil::laplacian<S>(q3, j) - stencil::dx_c(xq3, j) -
                           stencil::dy_c(yq3, j) + div[j] * q;
          G[o + j] = scale * (1.0 - M[o + j]) * g;
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

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("diffusion_loss_grad", &metaphys::diffusion_loss_grad_cpu); }
