// cloth_loss_grad, CUDA: the passes of cloth_math.h, one thread per vertex in 2-D tiles
// (common/launch_cuda.cuh), and a two-level deterministic per-sample loss reduction
// (common/reduce_cuda.cuh). The work planes get only their halo zeroed.
#include "cloth/cloth_cuda.h"
#include "common/reduce_cuda.cuh"
#include "common/workspace_cuda.cuh"

namespace metaphys {
namespace {

using namespace cudak;
using namespace cloth;

template <int PASS>
__global__ void cloth_pass_kernel(Args g, Shape s, double* __restrict__ partials) {
  const Cell c = this_cell();
  const bool in = c.in(s.H, s.W);
  if constexpr (PASS == 2) {
    store_block_partial(in ? cloth_element_at(g, c.n, c.i, c.j) : 0.0, partials);
  } else if (in) {
    if constexpr (PASS == 1) cloth_vertex_at(g, c.n, c.i, c.j);
    if constexpr (PASS == 3) cloth_grad_at(g, c.n, c.i, c.j);
  }
}

}  // namespace

// work planes, then the loss partials [N * blocks_per_sample]
int64_t cloth_cuda_scratch(const Args& g) {
  return work_doubles(g) + g.N * shape_of(g.N, g.H, g.W).blocks_per_sample();
}

cudaError_t cloth_cuda_launch(const Args& args, double* loss, double* grad, double* scratch, cudaStream_t stream) {
  Args g = args;
  const Shape s = shape_of(g.N, g.H, g.W);
  g.work = scratch;
  g.grad = grad;
  double* partials = scratch + work_doubles(g);
  launch_zero_halo(g.work, kWorkPlanes * g.N, s.H, s.W, stream);
  cloth_pass_kernel<1><<<s.grid(), s.block(), 0, stream>>>(g, s, partials);
  cloth_pass_kernel<2><<<s.grid(), s.block(), 0, stream>>>(g, s, partials);
  cloth_pass_kernel<3><<<s.grid(), s.block(), 0, stream>>>(g, s, partials);
  launch_finish_sums(partials, s, Store{loss}, stream);
  return cudaGetLastError();
}

}  // namespace metaphys
