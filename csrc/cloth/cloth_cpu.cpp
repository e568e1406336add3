// CPU kernel of metaphys::cloth_loss_grad (schema in csrc/bindings.cpp, math in cloth_math.h).
// Parallel over vertex rows of all samples; per-row loss sums are added in a fixed order
// (sum_rows), so results do not depend on the thread count.
#include <torch/library.h>

#include <vector>

#include "cloth/cloth_args.h"
#include "common/parallel_cpu.h"
#include "common/workspace.h"

namespace metaphys {
namespace {

constexpr int64_t kChunkCells = 4096;  // cells per parallel chunk

std::tuple<at::Tensor, at::Tensor> cloth_loss_grad_cpu(
    const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old, const at::Tensor& pin_w,
    const at::Tensor& pin_x, const at::Tensor& colliders, const at::Tensor& gravity,
    const at::Tensor& wind, const at::Tensor& rest, const at::Tensor& k_stretch, const at::Tensor& k_shear,
    const at::Tensor& k_bend, const at::Tensor& mass, const at::Tensor& damping, const at::Tensor& k_pin,
    const at::Tensor& k_contact, const at::Tensor& margin, const at::Tensor& dt) {
  cloth::Args g = cloth_args(a, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, rest, k_stretch, k_shear,
                             k_bend, mass, damping, k_pin, k_contact, margin, dt);
  check_cpu(a, "cloth_loss_grad");
  const int64_t N = g.N, H = g.H, W = g.W;
  at::Tensor loss = at::empty({N}, a.options());
  at::Tensor grad = at::empty_like(a);
  if (N == 0) return {loss, grad};
  workspace::Scratch work = workspace::halo_planes(cloth::kWorkPlanes * N, H, W, a.options());
  g.work = work.ptr;
  g.grad = grad.mutable_data_ptr<double>();

  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) cloth::cloth_vertex_at(g, r / H, r % H, j);
  });
  std::vector<double> rows_loss(N * H);
  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    double s = 0.0;
    for (int64_t j = 0; j < W; ++j) s += cloth::cloth_element_at(g, r / H, r % H, j);
    rows_loss[r] = s;
  });
  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) cloth::cloth_grad_at(g, r / H, r % H, j);
  });
  sum_rows(rows_loss, N, H, loss.mutable_data_ptr<double>());
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("cloth_loss_grad", &cloth_loss_grad_cpu); }

}  // namespace metaphys
