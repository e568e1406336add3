// wave_loss_grad, CPU (math in wave_math.h): one fused sweep (common/row_window.h), rows of
// q = free*r are computed into a window from a window of xm rows.
#include <torch/library.h>

#include "common/row_window.h"
#include "wave/wave_args.h"

namespace metaphys {
namespace {

using stencil::Rows3;
using stencil::RowWindow;

std::tuple<at::Tensor, at::Tensor> wave_loss_grad_cpu(const at::Tensor& a, const at::Tensor& x_old,
                                                      const at::Tensor& v_old, const at::Tensor& mask,
                                                      const at::Tensor& bc, const at::Tensor& c,
                                                      const at::Tensor& dt, int64_t stencil_size, bool true_grad) {
  const wave::Args g = wave_args(a, x_old, v_old, mask, bc, c, dt, stencil_size, true_grad);
  check_cpu(a, "wave_loss_grad");
  check_param_values(c, "c", /*positive=*/false);
  check_param_values(dt, "dt", /*positive=*/true);
  const int64_t N = g.N, H = g.H, W = g.W;
  stencil::GridCall call(a, mask, 1);
  const double* A = g.a;
  const double* V0 = g.v_old;
  const double* M = g.mask;
  const double* DT = g.dt;
  double* G = call.grad.mutable_data_ptr<double>();

  auto fill_xm = [&](int64_t n, int64_t i, double* out) {
    const int64_t o = (n * H + i) * W;
    const double dtn = DT[n];
    for (int64_t j = 0; j < W; ++j) out[j] = wave::midpoint(M[o + j], g.bc[o + j], g.x_old[o + j], V0[o + j], A[o + j], dtn);
  };

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    for_rows(N * H, W, stencil::kChunkCells, [&](int64_t begin, int64_t end) {
      const stencil::OwnedRows own{begin, end};
      RowWindow xm(H, W, false), qw(H, W, false);
      auto fill_q = [&](int64_t n, int64_t i, double* out) {
        xm.move_to(n, i, fill_xm);
        const Rows3 x3 = xm.rows();
        const int64_t row = n * H + i, o = row * W;
        const double dtn = DT[n], c2 = g.c[n] * g.c[n];
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double fr = 1.0 - M[o + j];
          const double vn = wave::new_velocity(fr, V0[o + j], A[o + j], dtn);
          const double r = wave::residual<S>(x3.at(j), vn, V0[o + j], dtn, c2);
          const double q = fr * r;
          acc += q * r;
          out[j] = q;
        }
        if (own.owns(row)) call.partial[row] = acc;
      };
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        qw.move_to(n, i, fill_q);
        const Rows3 q3 = qw.rows();
        const int64_t o = row * W;
        const double dtn = DT[n], c2 = g.c[n] * g.c[n], scale = 2.0 / call.count[n];
        if (true_grad) {
          for (int64_t j = 0; j < W; ++j) G[o + j] = wave::grad_true<S>(q3.at(j), 1.0 - M[o + j], dtn, c2, scale);
        } else {
          for (int64_t j = 0; j < W; ++j) G[o + j] = wave::grad_pseudo<S>(q3.mid[j], 1.0 - M[o + j], dtn, c2, scale);
        }
      }
    });
  });

  return call.finish();
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("wave_loss_grad", &metaphys::wave_loss_grad_cpu); }
