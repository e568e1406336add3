// wave_loss_grad, CUDA (math in wave_math.h): the midpoint heights xm, a residual kernel (loss
// partials, and the pseudo-gradient or q), then for the true gradient a second stencil over q.
#include "common/reduce_cuda.cuh"
#include "common/stencil_cuda.cuh"
#include "wave/wave_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;

__global__ void wave_midpoint_kernel(wave::Args g, Shape s, double* __restrict__ xm) {
  const Cell c = this_cell();
  if (!c.in(s.H, s.W)) return;
  const int64_t k = c.n * s.plane() + static_cast<int64_t>(c.i) * s.W + c.j;
  xm[k] = wave::midpoint(g.mask[k], g.bc[k], g.x_old[k], g.v_old[k], g.a[k], g.dt[c.n]);
}

template <int S, bool TrueGrad>
__global__ void wave_residual_kernel(wave::Args g, Shape s, const double* __restrict__ xm,
                                     const double* __restrict__ count, double* __restrict__ grad,
                                     double* __restrict__ q, double* __restrict__ partials) {
  const Cell c = this_cell();
  double contrib = 0.0;
  if (c.in(s.H, s.W)) {
    const int64_t k = c.n * s.plane() + static_cast<int64_t>(c.i) * s.W + c.j;
    const double dtn = g.dt[c.n], c2 = g.c[c.n] * g.c[c.n];
    const double fr = 1.0 - g.mask[k];
    const double vn = wave::new_velocity(fr, g.v_old[k], g.a[k], dtn);
    const double r = wave::residual<S>(nb<false>(plane_of(xm, c.n, s.H, s.W), c, s.H, s.W), vn, g.v_old[k], dtn, c2);
    const double qq = fr * r;
    contrib = qq * r;
    if constexpr (TrueGrad) {
      q[k] = qq;
    } else {
      grad[k] = wave::grad_pseudo<S>(qq, fr, dtn, c2, 2.0 / count[c.n]);
    }
  }
  store_block_partial(contrib, partials);
}

template <int S>
__global__ void wave_true_grad_kernel(wave::Args g, Shape s, const double* __restrict__ q,
                                      const double* __restrict__ count, double* __restrict__ grad) {
  const Cell c = this_cell();
  if (!c.in(s.H, s.W)) return;
  const int64_t k = c.n * s.plane() + static_cast<int64_t>(c.i) * s.W + c.j;
  const double dtn = g.dt[c.n], c2 = g.c[c.n] * g.c[c.n];
  grad[k] = wave::grad_true<S>(nb<false>(plane_of(q, c.n, s.H, s.W), c, s.H, s.W), 1.0 - g.mask[k], dtn, c2,
                               2.0 / count[c.n]);
}

template <int S>
void launch(const wave::Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream) {
  const Shape s = shape_of(g.N, g.H, g.W);
  double* count = scratch;
  double* partials = count + s.N;
  double* xm = partials + s.N * s.blocks_per_sample();
  double* q = xm + s.N * s.plane();
  launch_free_counts(g.mask, s, 1.0, partials, count, stream);
  wave_midpoint_kernel<<<s.grid(), s.block(), 0, stream>>>(g, s, xm);
  if (g.true_grad) {
    wave_residual_kernel<S, true><<<s.grid(), s.block(), 0, stream>>>(g, s, xm, count, grad, q, partials);
    wave_true_grad_kernel<S><<<s.grid(), s.block(), 0, stream>>>(g, s, q, count, grad);
  } else {
    wave_residual_kernel<S, false><<<s.grid(), s.block(), 0, stream>>>(g, s, xm, count, grad, q, partials);
  }
  launch_finish_loss(partials, count, s, loss, stream);
}

}  // namespace

int64_t wave_cuda_scratch(const wave::Args& g) {
  return common_scratch_doubles(shape_of(g.N, g.H, g.W)) + (g.true_grad ? 2 : 1) * g.N * g.H * g.W;
}

cudaError_t wave_cuda_launch(const wave::Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream) {
  stencil::dispatch_stencil(g.stencil, [&](auto S_) { launch<decltype(S_)::value>(g, loss, grad, scratch, stream); });
  return cudaGetLastError();
}

}  // namespace metaphys
