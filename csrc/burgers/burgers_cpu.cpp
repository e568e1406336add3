// burgers_loss_grad, CPU (math in burgers_math.h): one fused sweep (common/row_window.h), rows of
// (q_d, s_d, v~_0 q_d, v~_1 q_d) are computed into a window from a window of v~ rows.
#include <torch/library.h>

#include "burgers/burgers_args.h"
#include "common/row_window.h"

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
  const burgers::Args g = burgers_args(v, v_old, mask, bc, mu, dt, stencil_size, true_grad);
  check_cpu(v, "burgers_loss_grad");
  check_param_values(mu, "mu", /*positive=*/false);
  check_param_values(dt, "dt", /*positive=*/true);
  const int64_t N = g.N, H = g.H, W = g.W;
  const int64_t HW = H * W;
  stencil::GridCall call(v, mask, 2);
  const double* M = g.mask;
  double* G = call.grad.mutable_data_ptr<double>();

  // v~ rows of both channels (field 0 = x-component, field 1 = y-component).
  auto fill_vt = [&](int64_t n, int64_t i, double* out, int64_t stride) {
    const double* m = M + n * HW + i * W;
    for (int64_t ch = 0; ch < 2; ++ch) {
      const double* b = g.bc + (2 * n + ch) * HW + i * W;
      const double* u = g.v + (2 * n + ch) * HW + i * W;
      double* o = out + ch * stride;
      for (int64_t j = 0; j < W; ++j) o[j] = stencil::impose(m[j], b[j], u[j]);
    }
  };

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    for_rows(N * H, W, stencil::kChunkCells, [&](int64_t begin, int64_t end) {
      const stencil::OwnedRows own{begin, end};
      RowWindow vt(H, W, true, 2), qw(H, W, true, kFields);
      auto fill_vt_row = [&](int64_t n, int64_t i, double* out) { fill_vt(n, i, out, vt.stride()); };
      auto fill_q = [&](int64_t n, int64_t i, double* out) {
        vt.move_to(n, i, fill_vt_row);
        const Rows3 t0 = vt.rows(0), t1 = vt.rows(1);
        const int64_t st = qw.stride();
        const int64_t row = n * H + i, o = i * W;
        const double* m = M + n * HW + o;
        const double* vold0 = g.v_old + 2 * n * HW + o;
        const double* vold1 = vold0 + HW;
        const double mun = g.mu[n], dtn = g.dt[n];
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const burgers::CellResidual c =
              burgers::residual<S>(t0.at(j), t1.at(j), vold0[j], vold1[j], 1.0 - m[j], mun, dtn);
          acc += c.loss[0];
          acc += c.loss[1];
          out[kQ0 * st + j] = c.q[0];
          out[kQ1 * st + j] = c.q[1];
          out[kS0 * st + j] = c.s[0];
          out[kS1 * st + j] = c.s[1];
          out[kPX0 * st + j] = t0.mid[j] * c.q[0];
          out[kPX1 * st + j] = t0.mid[j] * c.q[1];
          out[kPY0 * st + j] = t1.mid[j] * c.q[0];
          out[kPY1 * st + j] = t1.mid[j] * c.q[1];
        }
        if (own.owns(row)) call.partial[row] = acc;
      };
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        qw.move_to(n, i, fill_q);
        const int64_t o = i * W;
        const double* m = M + n * HW + o;
        const double mun = g.mu[n], dtn = g.dt[n], scale = 2.0 / call.count[n];
        for (int ch = 0; ch < 2; ++ch) {
          const Rows3 q3 = qw.rows(kQ0 + ch), px = qw.rows(kPX0 + ch), py = qw.rows(kPY0 + ch);
          const double* s = qw.rows(kS0 + ch).mid;
          double* gd = G + (2 * n + ch) * HW + o;
          for (int64_t j = 0; j < W; ++j) {
            gd[j] = burgers::grad<S>(q3.at(j), px.at(j), py.at(j), s[j], mun, dtn, scale * (1.0 - m[j]), true_grad);
          }
        }
      }
    });
  });

  return call.finish();
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("burgers_loss_grad", &metaphys::burgers_loss_grad_cpu); }
