// diffusion_loss_grad, CUDA (math in diffusion_math.h): a residual kernel (loss partials, and the
// pseudo-gradient or q), then for the true gradient a second stencil over q.
#include "common/reduce_cuda.cuh"
#include "common/stencil_cuda.cuh"
#include "diffusion/diffusion_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;

template <int S, bool TrueGrad>
__global__ void diffusion_residual_kernel(diffusion::Args g, Shape s, const double* __restrict__ count,
                                          double* __restrict__ grad, double* __restrict__ q,
                                          double* __restrict__ partials) {
  const Cell c = this_cell();
  double contrib = 0.0;
  if (c.in(s.H, s.W)) {
    const int64_t base = c.n * s.plane();
    const int64_t k = base + static_cast<int64_t>(c.i) * s.W + c.j;
    const auto ct = nb<false>(ImposedOf{g.c + base, g.mask + base, g.bc + base, s.W}, c, s.H, s.W);
    const auto vy = nb<false>(plane_of(g.vel, 2 * c.n, s.H, s.W), c, s.H, s.W);
    const auto vx = nb<false>(plane_of(g.vel, 2 * c.n + 1, s.H, s.W), c, s.H, s.W);
    const double fr = 1.0 - g.mask[k];
    const double Dn = g.D[c.n], dtn = g.dt[c.n];
    const double div = diffusion::divergence(vx, vy);
    const double r = diffusion::residual<S>(ct, vx, vy, div, g.c_old[k], g.source[k], Dn, dtn);
    const double qq = fr * r;
    contrib = qq * r;
    if constexpr (TrueGrad) {
      q[k] = qq;
    } else {
      grad[k] = diffusion::grad_pseudo<S>(qq, fr, div, Dn, dtn, 2.0 / count[c.n]);
    }
  }
  store_block_partial(contrib, partials);
}

template <int S>
__global__ void diffusion_true_grad_kernel(diffusion::Args g, Shape s, const double* __restrict__ q,
                                           const double* __restrict__ count, double* __restrict__ grad) {
  const Cell c = this_cell();
  if (!c.in(s.H, s.W)) return;
  const int64_t k = c.n * s.plane() + static_cast<int64_t>(c.i) * s.W + c.j;
  const auto qn = nb<false>(plane_of(q, c.n, s.H, s.W), c, s.H, s.W);
  const auto vy = nb<false>(plane_of(g.vel, 2 * c.n, s.H, s.W), c, s.H, s.W);
  const auto vx = nb<false>(plane_of(g.vel, 2 * c.n + 1, s.H, s.W), c, s.H, s.W);
  grad[k] = diffusion::grad_true<S>(qn, stencil::product(vx, qn), stencil::product(vy, qn), 1.0 - g.mask[k],
                                    diffusion::divergence(vx, vy), g.D[c.n], g.dt[c.n], 2.0 / count[c.n]);
}

template <int S>
void launch(const diffusion::Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream) {
  const Shape s = shape_of(g.N, g.H, g.W);
  double* count = scratch;
  double* partials = count + s.N;
  double* q = partials + s.N * s.blocks_per_sample();
  launch_free_counts(g.mask, s, 1.0, partials, count, stream);
  if (g.true_grad) {
    diffusion_residual_kernel<S, true><<<s.grid(), s.block(), 0, stream>>>(g, s, count, grad, q, partials);
    diffusion_true_grad_kernel<S><<<s.grid(), s.block(), 0, stream>>>(g, s, q, count, grad);
  } else {
    diffusion_residual_kernel<S, false><<<s.grid(), s.block(), 0, stream>>>(g, s, count, grad, q, partials);
  }
  launch_finish_loss(partials, count, s, loss, stream);
}

}  // namespace

int64_t diffusion_cuda_scratch(const diffusion::Args& g) {
  return common_scratch_doubles(shape_of(g.N, g.H, g.W)) + (g.true_grad ? g.N * g.H * g.W : 0);
}

cudaError_t diffusion_cuda_launch(const diffusion::Args& g, double* loss, double* grad, double* scratch,
                                  cudaStream_t stream) {
  stencil::dispatch_stencil(g.stencil, [&](auto S_) { launch<decltype(S_)::value>(g, loss, grad, scratch, stream); });
  return cudaGetLastError();
}

}  // namespace metaphys
