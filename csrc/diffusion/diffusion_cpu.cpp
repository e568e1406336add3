// diffusion_loss_grad, CPU. Backward-Euler advection-diffusion residual (velocity channels:
// 0 = v_y, 1 = v_x), with c~ = m*b + (1-m)*c:
//   r = (c~ - c_old)/dt - D*L(c~) + v_x*Dx_c(c~) + v_y*Dy_c(c~) + div(v)*c~ - R,  div(v) = Dx_c v_x + Dy_c v_y
// loss = sum(free*r^2) / N, N = max(1, sum free). With q = free*r:
//   pseudo gradient (L's neighbours and v.grad c detached): 2/N * free * (1/dt - D*w_c + div v) * q
//   true gradient: 2/N * free * (q/dt - D*L(q) - Dx_c(v_x q) - Dy_c(v_y q) + div(v)*q)
//   (L^T = L and Dx_c^T = -Dx_c under zero padding).
// One fused sweep (stencil.h): rows of (q, v_x q, v_y q, div v) are computed into a window.
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
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      const stencil::OwnedRows own{begin, end};
      RowWindow ct(H, W, false), vy(H, W, false), vx(H, W, false);
      RowWindow qw(H, W, false, 4);  // fields: q, v_x*q, v_y*q, div v
      auto fill_q = [&](int64_t n, int64_t i, double* out) {
        ct.move_to(n, i, fill_ct);
        vy.move_to(n, i, fill_vy);
        vx.move_to(n, i, fill_vx);
        const Rows3 c3 = ct.rows(), y3 = vy.rows(), x3 = vx.rows();
        double* oq = out;
        double* oxq = out + qw.stride();
        double* oyq = out + 2 * qw.stride();
        double* odiv = out + 3 * qw.stride();
        const int64_t row = n * H + i, o = n * HW + i * W;
        const double Dn = Dp[n], dtn = DT[n];
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double cc = c3.mid[j];
          const double div = stencil::dx_c(x3, j) + stencil::dy_c(y3, j);
          const double r = (cc - C0[o + j]) / dtn - Dn * stencil::laplacian<S>(c3, j) +
                           x3.mid[j] * stencil::dx_c(c3, j) + y3.mid[j] * stencil::dy_c(c3, j) + div * cc -
                           R[o + j];
          const double q = (1.0 - M[o + j]) * r;
          acc += q * r;
          oq[j] = q;
          oxq[j] = x3.mid[j] * q;
          oyq[j] = y3.mid[j] * q;
          odiv[j] = div;
        }
        if (own.owns(row)) partial[row] = acc;
      };
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        qw.move_to(n, i, fill_q);
        const Rows3 q3 = qw.rows(0), xq3 = qw.rows(1), yq3 = qw.rows(2);
        const double* div = qw.rows(3).mid;
        const int64_t o = n * HW + i * W;
        const double Dn = Dp[n], dtn = DT[n], scale = 2.0 / count[n];
        if (true_grad) {
          for (int64_t j = 0; j < W; ++j) {
            const double q = q3.mid[j];
            const double g = q / dtn - Dn * stencil::laplacian<S>(q3, j) - stencil::dx_c(xq3, j) -
                             stencil::dy_c(yq3, j) + div[j] * q;
            G[o + j] = scale * (1.0 - M[o + j]) * g;
          }
        } else {
          for (int64_t j = 0; j < W; ++j) {
            G[o + j] = scale * (1.0 - M[o + j]) * (1.0 / dtn - Dn * wc + div[j]) * q3.mid[j];
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

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("diffusion_loss_grad", &metaphys::diffusion_loss_grad_cpu); }
