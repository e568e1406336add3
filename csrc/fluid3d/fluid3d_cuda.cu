// fluid3d_loss_grad, CUDA: the passes of fluid3d_math.h, one thread per grid point. The launch is
// the common 2-D tile shape (common/launch_cuda.cuh) over the D*H rows of W points of each sample
// (a row r is the point row (k, i) = (r / H, r % H)); the means and the loss are two-level
// deterministic per-sample reductions (common/reduce_cuda.cuh). The work volumes get only their halo
// zeroed: the border of every plane (launch_zero_halo) and the first and last plane of each volume.
#include "common/reduce_cuda.cuh"
#include "common/workspace_cuda.cuh"
#include "fluid3d/fluid3d_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;
using namespace fluid3d;

// Channel ch (0..2 = a_z, a_y, a_x, 3 = p) of the unknown u [N, 4, D, H, W], by (n, row, j).
struct Channel {
  const double* u;
  int64_t rows;  // D * H
  int W, ch;
  __device__ double operator()(int64_t n, int r, int j) const {
    return u[((n * 4 + ch) * rows + r) * static_cast<int64_t>(W) + j];
  }
};
// mean[n * every + at] = sum / cells
struct ToMean {
  double cells;
  double* mean;
  int every, at;
  __device__ void operator()(int64_t n, double s) const { mean[n * every + at] = s / cells; }
};
// loss = sum of the point contributions + the gauge terms
struct ToFluid3dLoss {
  const double* mean_a;
  const double* mean_p;
  double w_a, w_p;
  double* loss;
  __device__ void operator()(int64_t n, double s) const {
    double ga = 0.0;
    for (int m = 0; m < 3; ++m) ga += mean_a[n * 3 + m] * mean_a[n * 3 + m];
    loss[n] = s + w_a * ga + w_p * mean_p[n] * mean_p[n];
  }
};

// The first and last plane of each of `volumes` padded volumes (the rest of the halo: launch_zero_halo).
__global__ void zero_end_planes_kernel(double* __restrict__ work, int64_t volumes, int64_t D, int64_t plane) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= volumes * 2 * plane) return;
  const int64_t v = t / (2 * plane), rest = t % (2 * plane);
  const int64_t at = rest < plane ? rest : (D + 1) * plane + (rest - plane);
  work[v * (D + 2) * plane + at] = 0.0;
}

template <int PASS>
__global__ void fluid3d_pass_kernel(Args g, Shape s, double* __restrict__ partials) {
  const Cell c = this_cell();
  const bool in = c.in(s.H, s.W);
  const int64_t k = in ? c.i / g.H : 0, i = in ? c.i % g.H : 0;
  if constexpr (PASS == 2) {
    store_block_partial(in ? fluid3d_residual_at(g, c.n, k, i, c.j) : 0.0, partials);
  } else if (in) {
    if constexpr (PASS == 1) fluid3d_velocity_at(g, c.n, k, i, c.j);
    if constexpr (PASS == 3) fluid3d_adjoint_at(g, c.n, k, i, c.j);
    if constexpr (PASS == 4) fluid3d_grad_a_at(g, c.n, k, i, c.j);
  }
}

Shape rows_shape(const Args& g) { return shape_of(g.N, g.D * g.H, g.W); }

}  // namespace

// work volumes, then means [4N] (a: [3N], p: [N]), then one partial array [N * blocks_per_sample]
int64_t fluid3d_cuda_scratch(const Args& g) {
  return work_doubles(g) + 4 * g.N + g.N * rows_shape(g).blocks_per_sample();
}

cudaError_t fluid3d_cuda_launch(const Args& args, double* loss, double* grad, double* scratch, cudaStream_t stream) {
  Args g = args;
  const Shape s = rows_shape(g);
  assign_work(g, scratch);
  double* means = scratch + work_doubles(g);
  double* mean_a = means;
  double* mean_p = means + 3 * g.N;
  double* part = means + 4 * g.N;
  g.mean_a = mean_a;
  g.mean_p = mean_p;
  g.grad = grad;
  const int64_t volumes = kWorkPlanes * g.N, plane = (g.H + 2) * (g.W + 2);
  launch_zero_halo(scratch, volumes * (g.D + 2), static_cast<int>(g.H), static_cast<int>(g.W), stream);
  zero_end_planes_kernel<<<blocks_for(volumes * 2 * plane), kThreads, 0, stream>>>(scratch, volumes, g.D, plane);
  const double cells = static_cast<double>(g.D * g.H * g.W);
  // one partial array, reused: the launches run in stream order
  for (int ch = 0; ch < 4; ++ch) {
    launch_cell_partials(s, Channel{g.u, g.D * g.H, s.W, ch}, part, stream);
    if (ch < 3) {
      launch_finish_sums(part, s, ToMean{cells, mean_a, 3, ch}, stream);
    } else {
      launch_finish_sums(part, s, ToMean{cells, mean_p, 1, 0}, stream);
    }
  }
  fluid3d_pass_kernel<1><<<s.grid(), s.block(), 0, stream>>>(g, s, part);
  fluid3d_pass_kernel<2><<<s.grid(), s.block(), 0, stream>>>(g, s, part);
  fluid3d_pass_kernel<3><<<s.grid(), s.block(), 0, stream>>>(g, s, part);
  fluid3d_pass_kernel<4><<<s.grid(), s.block(), 0, stream>>>(g, s, part);
  launch_finish_sums(part, s, ToFluid3dLoss{g.mean_a, g.mean_p, g.w_a, g.w_p, loss}, stream);
  return cudaGetLastError();
}

}  // namespace metaphys
