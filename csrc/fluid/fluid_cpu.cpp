// CPU kernel of metaphys::fluid_loss_grad (schema in csrc/bindings.cpp, math in fluid_math.h).
// Parallel over rows of all samples (at::parallel_for); reductions are per-row partial sums
// added in a fixed order, so results do not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/checks.h"
#include "common/workspace.h"
#include "fluid/fluid_check.h"
#include "fluid/fluid_math.h"

namespace metaphys {
namespace {

using workspace::Scratch;
using workspace::work_buffer;
using workspace::zero_halo;

// Larger chunks than cloth: a fluid row is cheaper per entry.
template <typename F>
void for_rows(int64_t rows, int64_t w, const F& f) { workspace::for_rows(rows, w, f, 8192); }

std::tuple<at::Tensor, at::Tensor> fluid_loss_grad_cpu(const at::Tensor& u, const at::Tensor& a_old,
                                                      const at::Tensor& mask, const at::Tensor& bc,
                                                      const at::Tensor& force, const at::Tensor& rho,
                                                      const at::Tensor& mu, const at::Tensor& dt, double w_nav,
                                                      double w_bound, double w_a, double w_p) {
  check_fluid_args(u, a_old, mask, bc, force, rho, mu, dt, w_nav, w_bound, w_a, w_p);
  const int64_t N = u.size(0), H = u.size(2), W = u.size(3);
  const int64_t plane = H * W;
  auto opts = u.options();
  at::Tensor loss = at::empty({N}, opts);
  at::Tensor grad = at::empty_like(u);
  if (N == 0) return {loss, grad};
  // padded work planes; the halo must read 0
  Scratch work = work_buffer(fluid::kWorkPlanes * N * (H + 2) * (W + 2), opts);
  zero_halo(work.ptr, fluid::kWorkPlanes * N, H, W);  // the halo must read 0
  // pass 0: per-sample means of a and p (row sums, then a fixed-order sum per sample)
  std::vector<double> rows_a(N * H), rows_p(N * H);
  const double* up = u.data_ptr<double>();
  for_rows(N * H, W, [&](int64_t r) {
    const int64_t n = r / H, i = r % H;
    const double* a = up + (n * 2 + 0) * plane + i * W;
    const double* p = up + (n * 2 + 1) * plane + i * W;
    double sa = 0.0, sp = 0.0;
    for (int64_t j = 0; j < W; ++j) {
      sa += a[j];
      sp += p[j];
    }
    rows_a[r] = sa;
    rows_p[r] = sp;
  });
  std::vector<double> mean_a(N), mean_p(N);
  for (int64_t n = 0; n < N; ++n) {
    double sa = 0.0, sp = 0.0;
    for (int64_t i = 0; i < H; ++i) {
      sa += rows_a[n * H + i];
      sp += rows_p[n * H + i];
    }
    mean_a[n] = sa / (double)plane;
    mean_p[n] = sp / (double)plane;
  }

  fluid::Args g;
  g.u = up;
  g.a_old = a_old.data_ptr<double>();
  g.mask = mask.data_ptr<double>();
  g.bc = bc.data_ptr<double>();
  g.force = force.data_ptr<double>();
  g.rho = rho.data_ptr<double>();
  g.mu = mu.data_ptr<double>();
  g.dt = dt.data_ptr<double>();
  g.w_nav = w_nav;
  g.w_bound = w_bound;
  g.w_a = w_a;
  g.w_p = w_p;
  g.N = N;
  g.H = H;
  g.W = W;
  fluid::assign_work(g, work.ptr);
  g.mean_a = mean_a.data();
  g.mean_p = mean_p.data();
  g.grad = grad.data_ptr<double>();

  for_rows(N * H, W, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) fluid::fluid_velocity_at(g, r / H, r % H, j);
  });
  std::vector<double> rows_loss(N * H);
  for_rows(N * H, W, [&](int64_t r) {
    double s = 0.0;
    for (int64_t j = 0; j < W; ++j) {
      fluid::fluid_residual_at(g, r / H, r % H, j);
      s += g.cell_loss[fluid::pidx(g, r / H, r % H, j)];
    }
    rows_loss[r] = s;
  });
  for_rows(N * H, W, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) fluid::fluid_adjoint_at(g, r / H, r % H, j);
  });
  for_rows(N * H, W, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) fluid::fluid_grad_a_at(g, r / H, r % H, j);
  });
  double* lp = loss.data_ptr<double>();
  for (int64_t n = 0; n < N; ++n) {
    double s = 0.0;
    for (int64_t i = 0; i < H; ++i) s += rows_loss[n * H + i];
    lp[n] = s + w_a * mean_a[n] * mean_a[n] + w_p * mean_p[n] * mean_p[n];
  }
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("fluid_loss_grad", &fluid_loss_grad_cpu); }

}  // namespace metaphys
