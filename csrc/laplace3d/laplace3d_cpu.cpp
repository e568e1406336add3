// laplace3d_loss_grad, CPU (math in laplace3d_math.h). Parallel over the rows (n, k, i) of all
// samples; the loss is per-row partial sums added in a fixed order (sum_rows), so results do not
// depend on the thread count. The true gradient keeps q = free*r in a buffer and applies L to it.
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "common/parallel_cpu.h"
#include "laplace3d/laplace3d_args.h"

namespace metaphys {
namespace {

constexpr int64_t kChunkCells = 4096;

template <int S>
void run(const laplace3d::Args& g, double* loss, double* G) {
  const int64_t N = g.N, D = g.D, H = g.H, W = g.W;
  const int64_t rows = D * H;
  const double* M = g.mask;
  // free counts per sample (deterministic order)
  std::vector<double> free_rows(N * rows), counts(N);
  for_each_row(N * rows, W, kChunkCells, [&](int64_t r) {
    double s = 0.0;
    for (int64_t j = 0; j < W; ++j) s += 1.0 - M[r * W + j];
    free_rows[r] = s;
  });
  sum_rows(free_rows, N, rows, counts.data());
  for (int64_t n = 0; n < N; ++n) counts[n] = counts[n] > 1.0 ? counts[n] : 1.0;

  std::vector<double> q(g.true_grad ? N * rows * W : 0);
  std::vector<double> loss_rows(N * rows);
  for_each_row(N * rows, W, kChunkCells, [&](int64_t r) {
    const int64_t n = r / rows, k = (r % rows) / H, i = r % H;
    const double scale = 2.0 / counts[n];
    double acc = 0.0;
    for (int64_t j = 0; j < W; ++j) {
      double c = 0.0;
      const double qq = laplace3d::q_at<S>(g, n, k, i, j, &c);
      acc += c;
      if (g.true_grad) {
        q[r * W + j] = qq;
      } else {
        G[r * W + j] = laplace3d::grad_pseudo<S>(qq, 1.0 - M[r * W + j], scale);
      }
    }
    loss_rows[r] = acc;
  });
  if (g.true_grad) {
    for_each_row(N * rows, W, kChunkCells, [&](int64_t r) {
      const int64_t n = r / rows, k = (r % rows) / H, i = r % H;
      const double scale = 2.0 / counts[n];
      for (int64_t j = 0; j < W; ++j) {
        const laplace3d::Plain qn{q.data(), D, H, W, n, k, i, j};
        G[r * W + j] = laplace3d::grad_true<S>(qn, 1.0 - M[r * W + j], scale);
      }
    });
  }
  sum_rows(loss_rows, N, rows, loss);
  for (int64_t n = 0; n < N; ++n) loss[n] /= counts[n];
}

std::tuple<at::Tensor, at::Tensor> laplace3d_loss_grad_cpu(const at::Tensor& u, const at::Tensor& mask,
                                                           const at::Tensor& bc, const at::Tensor& f,
                                                           int64_t stencil, bool true_grad) {
  const laplace3d::Args g = laplace3d_args(u, mask, bc, f, stencil, true_grad);
  check_cpu(u, "laplace3d_loss_grad");
  at::Tensor loss = at::empty({g.N}, u.options());
  at::Tensor grad = at::empty_like(u);
  if (g.N == 0) return {loss, grad};
  double* lp = loss.mutable_data_ptr<double>();
  double* gp = grad.mutable_data_ptr<double>();
  if (g.stencil == 27) {
    run<27>(g, lp, gp);
  } else {
    run<7>(g, lp, gp);
  }
  return {loss, grad};
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("laplace3d_loss_grad", &metaphys::laplace3d_loss_grad_cpu); }
