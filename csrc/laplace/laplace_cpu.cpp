// laplace_loss_grad, CPU (math in laplace_math.h): one fused sweep (common/row_window.h), rows of
// q = free*r are computed into a window from a window of u~ rows.
#include <torch/library.h>

#include "common/row_window.h"
#include "laplace/laplace_args.h"

namespace metaphys {
namespace {

using stencil::Rows3;
using stencil::RowWindow;

std::tuple<at::Tensor, at::Tensor> laplace_loss_grad_cpu(const at::Tensor& u, const at::Tensor& mask,
                                                         const at::Tensor& bc, const at::Tensor& f,
                                                         int64_t stencil_size, bool true_grad) {
  const laplace::Args g = laplace_args(u, mask, bc, f, stencil_size, true_grad);
  check_cpu(u, "laplace_loss_grad");
  const int64_t N = g.N, H = g.H, W = g.W;
  stencil::GridCall call(u, mask, 1);
  const double* M = g.mask;
  double* G = call.grad.mutable_data_ptr<double>();

  auto fill_ut = [&](int64_t n, int64_t i, double* out) {
    const int64_t o = (n * H + i) * W;
    for (int64_t j = 0; j < W; ++j) out[j] = stencil::impose(M[o + j], g.bc[o + j], g.u[o + j]);
  };

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    for_rows(N * H, W, stencil::kChunkCells, [&](int64_t begin, int64_t end) {
      const stencil::OwnedRows own{begin, end};
      RowWindow ut(H, W, false), qw(H, W, false);
      // q = free*r of row i; the loss partial of the row when this chunk owns it.
      auto fill_q = [&](int64_t n, int64_t i, double* out) {
        ut.move_to(n, i, fill_ut);
        const Rows3 u3 = ut.rows();
        const int64_t row = n * H + i, o = row * W;
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double r = laplace::residual<S>(u3.at(j), g.f[o + j]);
          const double q = (1.0 - M[o + j]) * r;
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
        const double scale = 2.0 / call.count[n];
        if (true_grad) {
          for (int64_t j = 0; j < W; ++j) G[o + j] = laplace::grad_true<S>(q3.at(j), 1.0 - M[o + j], scale);
        } else {
          for (int64_t j = 0; j < W; ++j) G[o + j] = laplace::grad_pseudo<S>(q3.mid[j], 1.0 - M[o + j], scale);
        }
      }
    });
  });

  return call.finish();
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("laplace_loss_grad", &metaphys::laplace_loss_grad_cpu); }
