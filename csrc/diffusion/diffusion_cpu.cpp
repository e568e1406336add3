// diffusion_loss_grad, CPU (math in diffusion_math.h): one fused sweep (common/row_window.h), rows
// of (q, v_x q, v_y q, div v) are computed into a window from windows of c~, v_y and v_x rows.
#include <torch/library.h>

#include "common/row_window.h"
#include "diffusion/diffusion_args.h"

namespace metaphys {
namespace {

using stencil::Rows3;
using stencil::RowWindow;

std::tuple<at::Tensor, at::Tensor> diffusion_loss_grad_cpu(const at::Tensor& c, const at::Tensor& c_old,
                                                           const at::Tensor& mask, const at::Tensor& bc,
                                                           const at::Tensor& vel, const at::Tensor& source,
                                                           const at::Tensor& D, const at::Tensor& dt,
                                                           int64_t stencil_size, bool true_grad) {
  const diffusion::Args g = diffusion_args(c, c_old, mask, bc, vel, source, D, dt, stencil_size, true_grad);
  check_cpu(c, "diffusion_loss_grad");
  check_param_values(D, "D", /*positive=*/false);
  check_param_values(dt, "dt", /*positive=*/true);
  const int64_t N = g.N, H = g.H, W = g.W;
  const int64_t HW = H * W;
  stencil::GridCall call(c, mask, 1);
  const double* M = g.mask;
  const double* V = g.vel;
  double* G = call.grad.mutable_data_ptr<double>();

  auto fill_ct = [&](int64_t n, int64_t i, double* out) {
    const int64_t o = n * HW + i * W;
    for (int64_t j = 0; j < W; ++j) out[j] = stencil::impose(M[o + j], g.bc[o + j], g.c[o + j]);
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
    for_rows(N * H, W, stencil::kChunkCells, [&](int64_t begin, int64_t end) {
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
        const double Dn = g.D[n], dtn = g.dt[n];
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double div = diffusion::divergence(x3.at(j), y3.at(j));
          const double r = diffusion::residual<S>(c3.at(j), x3.at(j), y3.at(j), div, g.c_old[o + j], g.source[o + j], Dn, dtn);
          const double q = (1.0 - M[o + j]) * r;
          acc += q * r;
          oq[j] = q;
          oxq[j] = x3.mid[j] * q;
          oyq[j] = y3.mid[j] * q;
          odiv[j] = div;
        }
        if (own.owns(row)) call.partial[row] = acc;
      };
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        qw.move_to(n, i, fill_q);
        const Rows3 q3 = qw.rows(0), xq3 = qw.rows(1), yq3 = qw.rows(2);
        const double* div = qw.rows(3).mid;
        const int64_t o = n * HW + i * W;
        const double Dn = g.D[n], dtn = g.dt[n], scale = 2.0 / call.count[n];
        if (true_grad) {
          for (int64_t j = 0; j < W; ++j) {
            G[o + j] = diffusion::grad_true<S>(q3.at(j), xq3.at(j), yq3.at(j), 1.0 - M[o + j], div[j], Dn, dtn, scale);
          }
        } else {
          for (int64_t j = 0; j < W; ++j) {
            G[o + j] = diffusion::grad_pseudo<S>(q3.mid[j], 1.0 - M[o + j], div[j], Dn, dtn, scale);
          }
        }
      }
    });
  });

  return call.finish();
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("diffusion_loss_grad", &metaphys::diffusion_loss_grad_cpu); }
