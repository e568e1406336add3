// wave_loss_grad, CPU. Unknown: the acceleration a. Within one step (free = 1 - m):
//   v_new = free*(v_old + dt*a),  x_new = m*b + free*(x_old + dt*v_new),  xm = (x_new + x_old)/2
//   r = (v_new - v_old)/dt - c^2 * L(xm);  loss = sum(free*r^2) / N, N = max(1, sum free)
// With q = free*r and d xm_j / d a_j = free^2 dt^2 / 2:
//   pseudo gradient (L's neighbours detached): 2/N * q * (free - c^2 * w_c * free^2 * dt^2 / 2)
//   true gradient:                             2/N * (free*q - c^2 * free^2 * dt^2 / 2 * L(q))
// One fused sweep (stencil.h): rows of q are computed into a window from a window of xm rows.
// Twin: metaphys.physics.wave.wave_twin.
#include <torch/library.h>

#include "wave/wave.h"

namespace metaphys {
namespace {

using stencil::Rows3;
using stencil::RowWindow;

std::tuple<at::Tensor, at::Tensor> wave_loss_grad_cpu(const at::Tensor& a, const at::Tensor& x_old,
                                                      const at::Tensor& v_old, const at::Tensor& mask,
                                                      const at::Tensor& bc, const at::Tensor& c,
                                                      const at::Tensor& dt, int64_t stencil_size, bool true_grad) {
  check_wave_inputs(a, x_old, v_old, mask, bc, c, dt, stencil_size);
  stencil::check_cpu(a, "wave_loss_grad");
  stencil::check_param_values(c, "c", /*positive=*/false);
  stencil::check_param_values(dt, "dt", /*positive=*/true);
  const int64_t N = a.size(0), H = a.size(2), W = a.size(3);
  at::Tensor loss = at::empty({N}, a.options());
  at::Tensor grad = at::empty_like(a);
  const std::vector<double> count = stencil::free_counts(mask, 1);

  const double* A = a.const_data_ptr<double>();
  const double* X0 = x_old.const_data_ptr<double>();
  const double* V0 = v_old.const_data_ptr<double>();
  const double* M = mask.const_data_ptr<double>();
  const double* B = bc.const_data_ptr<double>();
  const double* Cp = c.const_data_ptr<double>();
  const double* DT = dt.const_data_ptr<double>();
  double* G = grad.mutable_data_ptr<double>();
  std::vector<double> partial(static_cast<size_t>(N * H), 0.0);

  // The time-centred height (x_new + x_old)/2, row by row.
  auto fill_xm = [&](int64_t n, int64_t i, double* out) {
    const int64_t o = (n * H + i) * W;
    const double dtn = DT[n];
    for (int64_t j = 0; j < W; ++j) {
      const double fr = 1.0 - M[o + j];
      const double vn = fr * (V0[o + j] + dtn * A[o + j]);
      const double xn = M[o + j] * B[o + j] + fr * (X0[o + j] + dtn * vn);
      out[j] = 0.5 * (xn + X0[o + j]);
    }
  };

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    constexpr double wc = stencil::centre<S>();
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      const stencil::OwnedRows own{begin, end};
      RowWindow xm(H, W, false), qw(H, W, false);
      auto fill_q = [&](int64_t n, int64_t i, double* out) {
        xm.move_to(n, i, fill_xm);
        const Rows3 x3 = xm.rows();
        const int64_t row = n * H + i, o = row * W;
        const double dtn = DT[n], c2 = Cp[n] * Cp[n];
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double fr = 1.0 - M[o + j];
          const double vn = fr * (V0[o + j] + dtn * A[o + j]);
          const double r = (vn - V0[o + j]) / dtn - c2 * stencil::laplacian<S>(x3, j);
          const double q = fr * r;
          acc += q * r;
          out[j] = q;
        }
        if (own.owns(row)) partial[row] = acc;
      };
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        qw.move_to(n, i, fill_q);
        const Rows3 q3 = qw.rows();
        const int64_t o = row * W;
        const double dtn = DT[n], c2 = Cp[n] * Cp[n], scale = 2.0 / count[n];
        if (true_grad) {
          for (int64_t j = 0; j < W; ++j) {
            const double fr = 1.0 - M[o + j];
            G[o + j] = scale * (fr * q3.mid[j] - c2 * 0.5 * fr * fr * dtn * dtn * stencil::laplacian<S>(q3, j));
          }
        } else {
          for (int64_t j = 0; j < W; ++j) {
            const double fr = 1.0 - M[o + j];
            G[o + j] = scale * q3.mid[j] * (fr - c2 * wc * 0.5 * fr * fr * dtn * dtn);
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

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("wave_loss_grad", &metaphys::wave_loss_grad_cpu); }
