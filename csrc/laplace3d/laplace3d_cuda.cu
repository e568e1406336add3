// laplace3d_loss_grad, CUDA (math in laplace3d_math.h): one thread per node, the common 2-D tile
// launch over the D*H rows of W nodes of each sample (row r = (k, i) = (r / H, r % H)); free counts
// and the loss are the grid ops' deterministic two-level per-sample reductions. The true gradient
// writes q = free*r to scratch and applies L to it in a second kernel.
#include "common/reduce_cuda.cuh"
#include "laplace3d/laplace3d_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;

template <int S, bool TrueGrad>
__global__ void laplace3d_residual_kernel(laplace3d::Args g, Shape s, const double* __restrict__ count,
                                          double* __restrict__ grad, double* __restrict__ q,
                                          double* __restrict__ partials) {
  const Cell c = this_cell();
  double contrib = 0.0;
  if (c.in(s.H, s.W)) {
    const int64_t k = c.i / g.H, i = c.i % g.H;
    const int64_t o = ((c.n * g.D + k) * g.H + i) * g.W + c.j;
    const double qq = laplace3d::q_at<S>(g, c.n, k, i, c.j, &contrib);
    if constexpr (TrueGrad) {
      q[o] = qq;
    } else {
      grad[o] = laplace3d::grad_pseudo<S>(qq, 1.0 - g.mask[o], 2.0 / count[c.n]);
    }
  }
  store_block_partial(contrib, partials);
}

template <int S>
__global__ void laplace3d_true_grad_kernel(laplace3d::Args g, Shape s, const double* __restrict__ q,
                                           const double* __restrict__ count, double* __restrict__ grad) {
  const Cell c = this_cell();
  if (!c.in(s.H, s.W)) return;
  const int64_t k = c.i / g.H, i = c.i % g.H;
  const int64_t o = ((c.n * g.D + k) * g.H + i) * g.W + c.j;
  const laplace3d::Plain qn{q, g.D, g.H, g.W, c.n, k, i, c.j};
  grad[o] = laplace3d::grad_true<S>(qn, 1.0 - g.mask[o], 2.0 / count[c.n]);
}

template <int S>
void launch(const laplace3d::Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream) {
  const Shape s = shape_of(g.N, g.D * g.H, g.W);
  double* count = scratch;
  double* partials = count + s.N;
  double* q = partials + s.N * s.blocks_per_sample();
  launch_free_counts(g.mask, s, 1.0, partials, count, stream);
  if (g.true_grad) {
    laplace3d_residual_kernel<S, true><<<s.grid(), s.block(), 0, stream>>>(g, s, count, grad, q, partials);
    laplace3d_true_grad_kernel<S><<<s.grid(), s.block(), 0, stream>>>(g, s, q, count, grad);
  } else {
    laplace3d_residual_kernel<S, false><<<s.grid(), s.block(), 0, stream>>>(g, s, count, grad, q, partials);
  }
  launch_finish_loss(partials, count, s, loss, stream);
}

}  // namespace

int64_t laplace3d_cuda_scratch(const laplace3d::Args& g) {
  return common_scratch_doubles(shape_of(g.N, g.D * g.H, g.W)) + (g.true_grad ? g.N * g.D * g.H * g.W : 0);
}

cudaError_t laplace3d_cuda_launch(const laplace3d::Args& g, double* loss, double* grad, double* scratch,
                                  cudaStream_t stream) {
  if (g.stencil == 27) {
    launch<27>(g, loss, grad, scratch, stream);
  } else {
    launch<7>(g, loss, grad, scratch, stream);
  }
  return cudaGetLastError();
}

}  // namespace metaphys
