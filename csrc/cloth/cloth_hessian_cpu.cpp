// CPU kernel of metaphys::cloth_hessian (schema in csrc/bindings.cpp, math in cloth_hessian_math.h).
// Two passes, each parallel over vertex rows of all samples: pass 1 writes every vertex's own
// element blocks, pass 2 gathers them per vertex in a fixed order (no shared sums, no races):
// results do not depend on the thread count.
#include <torch/library.h>

#include <vector>

#include "cloth/cloth_args.h"
#include "cloth/cloth_hessian_math.h"
#include "common/parallel_cpu.h"
#include "common/workspace.h"

namespace metaphys {
namespace {

constexpr int64_t kChunkCells = 256;  // cells per parallel chunk (a vertex costs ~ a microsecond)

at::Tensor cloth_hessian_cpu(const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old,
                             const at::Tensor& pin_w, const at::Tensor& pin_x, const at::Tensor& colliders,
                             const at::Tensor& gravity, const at::Tensor& wind,
                             const at::Tensor& rest, const at::Tensor& k_stretch, const at::Tensor& k_shear,
                             const at::Tensor& k_bend, const at::Tensor& mass, const at::Tensor& damping,
                             const at::Tensor& k_pin, const at::Tensor& k_contact, const at::Tensor& margin,
                             const at::Tensor& dt, int64_t project) {
  cloth::HArgs h{};
  h.g = cloth_args(a, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, rest, k_stretch, k_shear, k_bend,
                   mass, damping, k_pin, k_contact, margin, dt);
  check_cpu(a, "cloth_hessian");
  h.project = checked_projection(project);
  const int64_t N = h.g.N, H = h.g.H, W = h.g.W;
  at::Tensor blocks = at::empty({N, cloth::kHOffsets, 3, 3, H, W}, a.options());
  if (N == 0) return blocks;
  workspace::Scratch work = workspace::work_buffer(cloth::hessian_work_doubles(h), a.options());
  h.work = work.ptr;
  h.blocks = blocks.mutable_data_ptr<double>();
  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) cloth::cloth_hessian_elements_at(h, r / H, r % H, j);
  });
  constexpr int kValues = cloth::kHOffsets * 9;
  const int64_t hw = H * W;
  for_rows(N * H, W, kChunkCells, [&](int64_t begin, int64_t end) {
    // a row's values vertex by vertex, then written out value by value: 117 runs of W doubles
    // instead of 117 interleaved streams (1 thread: 32^2 1.9 -> 1.6-1.7 ms, 128^2 35.9 -> 33-34 ms)
    std::vector<double> row(static_cast<size_t>(W) * kValues);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, i = r % H;
      for (int64_t j = 0; j < W; ++j) cloth::cloth_hessian_gather_at(h, n, i, j, row.data() + j * kValues, 1);
      double* out = h.blocks + n * kValues * hw + i * W;
      for (int q = 0; q < kValues; ++q)
        for (int64_t j = 0; j < W; ++j) out[q * hw + j] = row[j * kValues + q];
    }
  });
  return blocks;
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("cloth_hessian", &cloth_hessian_cpu); }

}  // namespace metaphys
