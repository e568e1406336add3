// CPU kernel of metaphys::fluid3d_loss_grad (schema in csrc/bindings.cpp, math in fluid3d_math.h).
// Parallel over the rows (n, k, i) of all samples; reductions are per-row partial sums added in a
// fixed order (sum_rows), so results do not depend on the thread count.
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/parallel_cpu.h"
#include "common/workspace.h"
#include "fluid3d/fluid3d_args.h"

namespace metaphys {
namespace {

constexpr int64_t kChunkCells = 4096;  // a 3-D point costs about three 2-D ones

// Zero the halo of `volumes` padded [D+2, H+2, W+2] volumes: the border of every plane, then the
// first and last plane of each volume.
void zero_volume_halo(double* work, int64_t volumes, int64_t D, int64_t H, int64_t W) {
  const int64_t plane = (H + 2) * (W + 2);
  workspace::zero_halo(work, volumes * (D + 2), H, W);
  for (int64_t v = 0; v < volumes; ++v) {
    double* first = work + v * (D + 2) * plane;
    std::fill(first, first + plane, 0.0);
    std::fill(first + (D + 1) * plane, first + (D + 2) * plane, 0.0);
  }
}

std::tuple<at::Tensor, at::Tensor> fluid3d_loss_grad_cpu(const at::Tensor& u, const at::Tensor& a_old,
                                                        const at::Tensor& mask, const at::Tensor& bc,
                                                        const at::Tensor& force, const at::Tensor& rho,
                                                        const at::Tensor& mu, const at::Tensor& dt, double w_nav,
                                                        double w_bound, double w_a, double w_p) {
  fluid3d::Args g = fluid3d_args(u, a_old, mask, bc, force, rho, mu, dt, w_nav, w_bound, w_a, w_p);
  check_cpu(u, "fluid3d_loss_grad");
  const int64_t N = g.N, D = g.D, H = g.H, W = g.W;
  const int64_t rows = D * H;  // rows per sample
  at::Tensor loss = at::empty({N}, u.options());
  at::Tensor grad = at::empty_like(u);
  if (N == 0) return {loss, grad};
  workspace::Scratch work = workspace::work_buffer(fluid3d::work_doubles(g), u.options());
  zero_volume_halo(work.ptr, fluid3d::kWorkPlanes * N, D, H, W);
  fluid3d::assign_work(g, work.ptr);
  g.grad = grad.mutable_data_ptr<double>();

  // pass 0: per-sample means of a_z, a_y, a_x and p
  std::vector<double> row_sums(4 * N * rows);
  for_each_row(N * rows, W, kChunkCells, [&](int64_t r) {
    const int64_t n = r / rows, kr = r % rows;
    for (int ch = 0; ch < 4; ++ch) {
      const double* x = g.u + ((n * 4 + ch) * rows + kr) * W;
      double s = 0.0;
      for (int64_t j = 0; j < W; ++j) s += x[j];
      row_sums[ch * N * rows + r] = s;
    }
  });
  std::vector<double> sums(4 * N), mean_a(3 * N), mean_p(N);
  const std::vector<double>::const_iterator base = row_sums.begin();
  for (int ch = 0; ch < 4; ++ch) {
    std::vector<double> part(base + ch * N * rows, base + (ch + 1) * N * rows);
    sum_rows(part, N, rows, sums.data() + ch * N);
  }
  const double cells = (double)(D * H * W);
  for (int64_t n = 0; n < N; ++n) {
    for (int m = 0; m < 3; ++m) mean_a[n * 3 + m] = sums[m * N + n] / cells;
    mean_p[n] = sums[3 * N + n] / cells;
  }
  g.mean_a = mean_a.data();
  g.mean_p = mean_p.data();

  auto point = [&](int64_t r, int64_t& n, int64_t& k, int64_t& i) {
    n = r / rows;
    k = (r % rows) / H;
    i = r % H;
  };
  for_each_row(N * rows, W, kChunkCells, [&](int64_t r) {
    int64_t n, k, i;
    point(r, n, k, i);
    for (int64_t j = 0; j < W; ++j) fluid3d::fluid3d_velocity_at(g, n, k, i, j);
  });
  std::vector<double> rows_loss(N * rows);
  for_each_row(N * rows, W, kChunkCells, [&](int64_t r) {
    int64_t n, k, i;
    point(r, n, k, i);
    double s = 0.0;
    for (int64_t j = 0; j < W; ++j) s += fluid3d::fluid3d_residual_at(g, n, k, i, j);
    rows_loss[r] = s;
  });
  for_each_row(N * rows, W, kChunkCells, [&](int64_t r) {
    int64_t n, k, i;
    point(r, n, k, i);
    for (int64_t j = 0; j < W; ++j) fluid3d::fluid3d_adjoint_at(g, n, k, i, j);
  });
  for_each_row(N * rows, W, kChunkCells, [&](int64_t r) {
    int64_t n, k, i;
    point(r, n, k, i);
    for (int64_t j = 0; j < W; ++j) fluid3d::fluid3d_grad_a_at(g, n, k, i, j);
  });
  double* lp = loss.mutable_data_ptr<double>();
  sum_rows(rows_loss, N, rows, lp);
  for (int64_t n = 0; n < N; ++n) {
    double ga = 0.0;
    for (int m = 0; m < 3; ++m) ga += mean_a[n * 3 + m] * mean_a[n * 3 + m];
    lp[n] = lp[n] + w_a * ga + w_p * mean_p[n] * mean_p[n];
  }
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("fluid3d_loss_grad", &fluid3d_loss_grad_cpu); }

}  // namespace metaphys
