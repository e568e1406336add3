// laplace_loss_grad, CPU: r = L(u~) + f with u~ = m*b + (1-m)*u; loss = sum(free*r^2) / max(1, sum free).
//   pseudo gradient (neighbours of L detached): 2/N * w_c * free * (free*r)          (one pass)
//   true gradient:                              2/N * free * L^T(free*r), L^T = L    (two passes)
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
  at::Tensor qbuf = true_grad ? at::empty_like(u) : at::Tensor();
  double* Q = true_grad ? qbuf.mutable_data_ptr<double>() : nullptr;
  std::vector<double> partial(static_cast<size_t>(N * H), 0.0);

  // u~ row by row: m*b + (1-m)*u (the twin's mask*bc + free*u).
  auto fill_ut = [&](int64_t n, int64_t i, double* out) {
    const int64_t o = (n * H + i) * W;
    for (int64_t j = 0; j < W; ++j) out[j] = M[o + j] * B[o + j] + (1.0 - M[o + j]) * U[o + j];
  };

  stencil::dispatch_stencil(stencil_size, [&](auto S_) {
    constexpr int S = decltype(S_)::value;
    constexpr double wc = stencil::centre<S>();
    // Pass 1: residual, loss partials, and the pseudo-gradient (or free*r for the true one).
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      RowWindow ut(H, W, false);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        ut.move_to(n, i, fill_ut);
        const Rows3 r3 = ut.rows();
        const int64_t o = row * W;
        const double scale = 2.0 / count[n];
        double acc = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const double fr = 1.0 - M[o + j];
          const double r = stencil::laplacian<S>(r3, j) + F[o + j];
          const double q = fr * r;
          acc += q * r;
          if (true_grad) {
            Q[o + j] = q;
          } else {
            G[o + j] = scale * wc * fr * q;
          }
        }
        partial[row] = acc;
      }
    });
    if (!true_grad) return;
    // Pass 2: grad = 2/N * free * L(q) (the 9- and 5-point stencils are symmetric: L^T = L).
    auto fill_q = [&](int64_t n, int64_t i, double* out) {
      const double* src = Q + (n * H + i) * W;
      std::copy(src, src + W, out);
    };
    stencil::for_rows(N, H, W, [&](int64_t begin, int64_t end) {
      RowWindow qw(H, W, false);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, i = row % H;
        qw.move_to(n, i, fill_q);
        const Rows3 r3 = qw.rows();
        const int64_t o = row * W;
        const double scale = 2.0 / count[n];
        for (int64_t j = 0; j < W; ++j) G[o + j] = scale * (1.0 - M[o + j]) * stencil::laplacian<S>(r3, j);
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
