// fluid_loss_grad, CUDA: the passes of fluid_math.h, one thread per grid point in 2-D tiles
// (common/launch_cuda.cuh), and two-level deterministic per-sample reductions for the means and
// the loss (common/reduce_cuda.cuh). The work planes get only their halo zeroed.
#include "common/reduce_cuda.cuh"
#include "common/workspace_cuda.cuh"
#include "fluid/fluid_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;
using namespace fluid;

// Channel ch (0 = a, 1 = p) of the unknown u [N, 2, H, W].
struct Channel {
  const double* u;
  int H, W, ch;
  __device__ double operator()(int64_t n, int i, int j) const {
    return u[((n * 2 + ch) * H + i) * static_cast<int64_t>(W) + j];
  }
};
struct ToMean {
  double cells;
  double* mean;
  __device__ void operator()(int64_t n, double s) const { mean[n] = s / cells; }
};
// loss = sum of the point contributions + the gauge terms
struct ToFluidLoss {
  const double* mean_a;
  const double* mean_p;
  double w_a, w_p;
  double* loss;
  __device__ void operator()(int64_t n, double s) const {
    loss[n] = s + w_a * mean_a[n] * mean_a[n] + w_p * mean_p[n] * mean_p[n];
  }
};

template <int PASS>
__global__ void fluid_pass_kernel(Args g, Shape s, double* __restrict__ partials) {
  const Cell c = this_cell();
  const bool in = c.in(s.H, s.W);
  if constexpr (PASS == 2) {
    store_block_partial(in ? fluid_residual_at(g, c.n, c.i, c.j) : 0.0, partials);
  } else if (in) {
    if constexpr (PASS == 1) fluid_velocity_at(g, c.n, c.i, c.j);
    if constexpr (PASS == 3) fluid_adjoint_at(g, c.n, c.i, c.j);
    if constexpr (PASS == 4) fluid_grad_a_at(g, c.n, c.i, c.j);
  }
}

}  // namespace

// work planes, then means [2N], then two partial arrays [N * blocks_per_sample]
int64_t fluid_cuda_scratch(const Args& g) {
  return work_doubles(g) + 2 * g.N + 2 * g.N * shape_of(g.N, g.H, g.W).blocks_per_sample();
}

cudaError_t fluid_cuda_launch(const Args& args, double* loss, double* grad, double* scratch, cudaStream_t stream) {
  Args g = args;
  const Shape s = shape_of(g.N, g.H, g.W);
  assign_work(g, scratch);
  double* means = scratch + work_doubles(g);
  double* part_a = means + 2 * g.N;
  double* part_p = part_a + g.N * s.blocks_per_sample();
  g.mean_a = means;
  g.mean_p = means + g.N;
  g.grad = grad;
  launch_zero_halo(scratch, kWorkPlanes * g.N, s.H, s.W, stream);
  launch_cell_partials(s, Channel{g.u, s.H, s.W, 0}, part_a, stream);
  launch_cell_partials(s, Channel{g.u, s.H, s.W, 1}, part_p, stream);
  launch_finish_sums(part_a, s, ToMean{static_cast<double>(s.plane()), means}, stream);
  launch_finish_sums(part_p, s, ToMean{static_cast<double>(s.plane()), means + g.N}, stream);
  fluid_pass_kernel<1><<<s.grid(), s.block(), 0, stream>>>(g, s, part_a);
  fluid_pass_kernel<2><<<s.grid(), s.block(), 0, stream>>>(g, s, part_a);
  fluid_pass_kernel<3><<<s.grid(), s.block(), 0, stream>>>(g, s, part_a);
  fluid_pass_kernel<4><<<s.grid(), s.block(), 0, stream>>>(g, s, part_a);
  launch_finish_sums(part_a, s, ToFluidLoss{g.mean_a, g.mean_p, g.w_a, g.w_p, loss}, stream);
  return cudaGetLastError();
}

}  // namespace metaphys
