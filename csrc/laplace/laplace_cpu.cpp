// laplace_loss_grad, CPU: r = L(u~) + f with u~ = m*b + (1-m)*u; loss = sum(free*r^2) / N, N = max(1, sum free).
// With q = free*r:
//   pseudo gradient (neighbours of L detached): 2/N * w_c * free * q
//   true gradient:                              2/N * free * L^T(q), and L^T = L (symmetric stencil)
// One fused sweep (stencil.h): rows of q are computed into a window from a window of u~ rows.
// Twin: metaphys.physics.laplace.laplace_twin.
#include <torch/library.h>

#include "laplace/laplace.h"

namespace metaphys {
namespace {

using stencil::Rows3;
using stencil::RowWindow;

std::tuple<at::Tensor, at::Tensor> laplace_loss_grad_cpu(const at::Tensor& u, const at::Tensor& mask,
                                                         const at::Tensor& bc, const at::Tensor& f,
                                                         int64_t stencil_size, bool true_grad) {
  check_laplace_inputs(u, mask, bc, f, stencil_size);
  stencil::check_cpu(u, "laplace_loss_grad");
  const int64_t N = u.size(0), H = u.size(2), W = u.size(3);
  at::Tensor loss = at::empty({N}, u.options());
  at::Tensor grad = at::empty_like(u);
  const std::vector<double> count = stencil::free_counts(mask, 1);

  const double* U = u.const_data_ptr<double>();
  const double* M = mask.const_data_ptr<double>();
  const double* B = bc.const_data_ptr<double>();
  const double* F = f.const_data_ptr<double>();
  double* G = grad.mutable_data_ptr<double>();
  std::vector<double> partial(static_cast<size_t>(N * H), 0.0);

  // u~ row by row: m*b + (1-m)*u (the twin's mask*bc + free*u).
  auto fill_ut = [&](int64_t n, int64_t i, double* out) {
    const int64_t o = (n * H + i) * W;
    for (int64_t j = 0; j < W; ++j) out[j] = M[o + j] * B[o + j] + (1.0 - M[o + j]) * U[o + j];
  };

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    constexpr double wc = stencil::centre<S>();
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      const stencil::OwnedRows own{begin, end};
      RowWindow ut(H, W, false), qw(H, W, false);
      // q = free*r of row i; the loss partial of the row when this chunk owns it.
      auto fill_q = [&](int64_t n, int64_t i, double* out) {
        ut.move_to(n, i, fill_ut);
        const Rows3 u3 = ut.rows();
        const int64_t row = n * H + i, o = row * W;
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double r = stencil::laplacian<S>(u3, j) + F[o + j];
          const double q = (1.0 - M[o + j]) * r;
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
        const double scale = 2.0 / count[n];
        if (true_grad) {
          for (int64_t j = 0; j < W; ++j) G[o + j] = scale * (1.0 - M[o + j]) * stencil::laplacian<S>(q3, j);
        } else {
          for (int64_t j = 0; j < W; ++j) G[o + j] = scale * wc * (1.0 - M[o + j]) * q3.mid[j];
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

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("laplace_loss_grad", &metaphys::laplace_loss_grad_cpu); }
