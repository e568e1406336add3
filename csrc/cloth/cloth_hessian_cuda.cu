// cloth_hessian, CUDA: the two passes of cloth_hessian_math.h, one thread per vertex in 2-D tiles
// (common/launch_cuda.cuh). Pass 1 writes every entry of the work buffer it owns, pass 2 only
// reads what pass 1 wrote: no zeroing, no atomics, deterministic.
#include "cloth/cloth_hessian_cuda.h"
#include "common/launch_cuda.cuh"

namespace metaphys {
namespace {

using namespace cudak;
using namespace cloth;

template <int PASS>
__global__ void cloth_hessian_kernel(HArgs h, Shape s) {
  const Cell c = this_cell();
  if (!c.in(s.H, s.W)) return;
  if constexpr (PASS == 1) cloth_hessian_elements_at(h, c.n, c.i, c.j);
  if constexpr (PASS == 2) {
    const int64_t hw = h.g.H * h.g.W;
    cloth_hessian_gather_at(h, c.n, c.i, c.j, h.blocks + c.n * kHOffsets * 9 * hw + c.i * h.g.W + c.j, hw);
  }
}

}  // namespace

int64_t cloth_hessian_cuda_scratch(const HArgs& h) { return hessian_work_doubles(h); }

cudaError_t cloth_hessian_cuda_launch(const HArgs& args, double* blocks, double* scratch, cudaStream_t stream) {
  HArgs h = args;
  const Shape s = shape_of(h.g.N, h.g.H, h.g.W);
  h.work = scratch;
  h.blocks = blocks;
  cloth_hessian_kernel<1><<<s.grid(), s.block(), 0, stream>>>(h, s);
  cloth_hessian_kernel<2><<<s.grid(), s.block(), 0, stream>>>(h, s);
  return cudaGetLastError();
}

}  // namespace metaphys
