// CPU kernel of metaphys::cloth_hessian (schema in csrc/bindings.cpp, math in cloth_hessian_math.h).
// Two passes, each parallel over vertex rows of all samples: pass 1 writes every vertex's own
// element blocks, pass 2 gathers them per vertex in a fixed order (no shared sums, no races):
// results do not depend on the thread count.
#include <torch/library.h>

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
  for_each_row(N * H, W, kChunkCells, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) cloth::cloth_hessian_gather_at(h, r / H, r % H, j);
  });
  return blocks;
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("cloth_hessian", &cloth_hessian_cpu); }

}  // namespace metaphys
