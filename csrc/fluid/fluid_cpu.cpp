// CPU kernel of metaphys::fluid_loss_grad (schema in csrc/bindings.cpp, math in fluid_math.h).
// Parallel over rows of all samples; reductions are per-row partial sums added in a fixed order
// (sum_rows), so results do not depend on the thread count.
#include <torch/library.h>

#include <vector>

#include "common/parallel_cpu.h"
#include "common/workspace.h"
#include "fluid/fluid_args.h"

namespace metaphys {
namespace {

// Cells per parallel chunk: a fluid row is cheaper per entry than a cloth row.
constexpr int64_t kChunkCells = 8192;

std::tuple<at::Tensor, at::Tensor> fluid_loss_grad_cpu(const at::Tensor& u, const at::Tensor& a_old,
                                                      const at::Tensor& mask, const at::Tensor& bc,
                                                      const at::Tensor& force, const at::Tensor& rho,
                                                      const at::Tensor& mu, const at::Tensor& dt, double w_nav,
                                                      double w_bound, double w_a, double w_p) {
  fluid::Args g = fluid_args(u, a_old, mask, bc, force, rho, mu, dt, w_nav, w_bound, w_a, w_p);
  check_cpu(u, "fluid_loss_grad");
  const int64_t N = g.N, H = g.H, W = g.W;
  at::Tensor loss = at::empty({N}, u.options());
  at::Tensor grad = at::empty_like(u);
  if (N == 0) return {loss, grad};
  workspace::Scratch work = workspace::halo_planes(fluid::kWorkPlanes * N, H, W, u.options());
  fluid::assign_work(g, work.ptr);
  g.grad = grad.mutable_data_ptr<double>();

  // pass 0: per-sample means of a and p
  std::vector<double> rows_a(N * H), rows_p(N * H);
  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    const int64_t n = r / H, i = r % H;
    const double* a = g.u + (n * 2 + 0) * H * W + i * W;
    const double* p = g.u + (n * 2 + 1) * H * W + i * W;
    double sa = 0.0, sp = 0.0;
    for (int64_t j = 0; j < W; ++j) {
      sa += a[j];
      sp += p[j];
    }
    rows_a[r] = sa;
    rows_p[r] = sp;
  });
  std::vector<double> mean_a(N), mean_p(N);
  sum_rows(rows_a, N, H, mean_a.data());
  sum_rows(rows_p, N, H, mean_p.data());
  for (int64_t n = 0; n < N; ++n) {
    mean_a[n] /= (double)(H * W);
    mean_p[n] /= (double)(H * W);
  }
  g.mean_a = mean_a.data();
  g.mean_p = mean_p.data();

  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) fluid::fluid_velocity_at(g, r / H, r % H, j);
  });
  std::vector<double> rows_loss(N * H);
  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    double s = 0.0;
    for (int64_t j = 0; j < W; ++j) s += fluid::fluid_residual_at(g, r / H, r % H, j);
    rows_loss[r] = s;
  });
  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) fluid::fluid_adjoint_at(g, r / H, r % H, j);
  });
  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) fluid::fluid_grad_a_at(g, r / H, r % H, j);
  });
  double* lp = loss.mutable_data_ptr<double>();
  sum_rows(rows_loss, N, H, lp);
  for (int64_t n = 0; n < N; ++n) lp[n] = lp[n] + w_a * mean_a[n] * mean_a[n] + w_p * mean_p[n] * mean_p[n];
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("fluid_loss_grad", &fluid_loss_grad_cpu); }

}  // namespace metaphys
