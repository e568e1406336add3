// burgers_loss_grad, CUDA (math in burgers_math.h): v~ of both channels, a residual kernel (loss
// partials, q_d and s_d), then the gradient kernel (periodic stencils over q_d and v~_c q_d).
#include "burgers/burgers_cuda.h"
#include "common/reduce_cuda.cuh"
#include "common/stencil_cuda.cuh"

namespace metaphys {
namespace {

using namespace cudak;

// v~ = m*b + (1-m)*v for both channels into vt [N, 2, H, W].
__global__ void burgers_impose_kernel(burgers::Args g, Shape s, double* __restrict__ vt) {
  const Cell c = this_cell();
  if (!c.in(s.H, s.W)) return;
  const int64_t cell = static_cast<int64_t>(c.i) * s.W + c.j;
  const double m = g.mask[c.n * s.plane() + cell];
  for (int ch = 0; ch < 2; ++ch) {
    const int64_t k = (2 * c.n + ch) * s.plane() + cell;
    vt[k] = stencil::impose(m, g.bc[k], g.v[k]);
  }
}

template <int S>
__global__ void burgers_residual_kernel(burgers::Args g, Shape s, const double* __restrict__ vt,
                                        double* __restrict__ q, double* __restrict__ sd,
                                        double* __restrict__ partials) {
  const Cell c = this_cell();
  double contrib = 0.0;
  if (c.in(s.H, s.W)) {
    const int64_t cell = static_cast<int64_t>(c.i) * s.W + c.j;
    const int64_t k0 = 2 * c.n * s.plane() + cell, k1 = k0 + s.plane();
    const burgers::CellResidual r = burgers::residual<S>(
        nb<true>(plane_of(vt, 2 * c.n, s.H, s.W), c, s.H, s.W), nb<true>(plane_of(vt, 2 * c.n + 1, s.H, s.W), c, s.H, s.W),
        g.v_old[k0], g.v_old[k1], 1.0 - g.mask[c.n * s.plane() + cell], g.mu[c.n], g.dt[c.n]);
    contrib = r.loss[0] + r.loss[1];
    q[k0] = r.q[0];
    q[k1] = r.q[1];
    sd[k0] = r.s[0];
    sd[k1] = r.s[1];
  }
  store_block_partial(contrib, partials);
}

template <int S, bool TrueGrad>
__global__ void burgers_grad_kernel(burgers::Args g, Shape s, const double* __restrict__ vt,
                                    const double* __restrict__ q, const double* __restrict__ sd,
                                    const double* __restrict__ count, double* __restrict__ grad) {
  const Cell c = this_cell();
  if (!c.in(s.H, s.W)) return;
  const int64_t cell = static_cast<int64_t>(c.i) * s.W + c.j;
  const double scale_fr = (2.0 / count[c.n]) * (1.0 - g.mask[c.n * s.plane() + cell]);
  const auto t0 = nb<true>(plane_of(vt, 2 * c.n, s.H, s.W), c, s.H, s.W);
  const auto t1 = nb<true>(plane_of(vt, 2 * c.n + 1, s.H, s.W), c, s.H, s.W);
  for (int ch = 0; ch < 2; ++ch) {
    const int64_t k = (2 * c.n + ch) * s.plane() + cell;
    const auto qd = nb<true>(plane_of(q, 2 * c.n + ch, s.H, s.W), c, s.H, s.W);
    grad[k] = burgers::grad<S>(qd, stencil::product(t0, qd), stencil::product(t1, qd), sd[k], g.mu[c.n], g.dt[c.n],
                               scale_fr, TrueGrad);
  }
}

template <int S>
void launch(const burgers::Args& g, double* loss, double* grad, double* scratch, cudaStream_t stream) {
  const Shape s = shape_of(g.N, g.H, g.W);
  double* count = scratch;
  double* partials = count + s.N;
  double* vt = partials + s.N * s.blocks_per_sample();
  double* q = vt + 2 * s.N * s.plane();
  double* sd = q + 2 * s.N * s.plane();
  launch_free_counts(g.mask, s, 2.0, partials, count, stream);
  burgers_impose_kernel<<<s.grid(), s.block(), 0, stream>>>(g, s, vt);
  burgers_residual_kernel<S><<<s.grid(), s.block(), 0, stream>>>(g, s, vt, q, sd, partials);
  if (g.true_grad) {
    burgers_grad_kernel<S, true><<<s.grid(), s.block(), 0, stream>>>(g, s, vt, q, sd, count, grad);
  } else {
    burgers_grad_kernel<S, false><<<s.grid(), s.block(), 0, stream>>>(g, s, vt, q, sd, count, grad);
  }
  launch_finish_loss(partials, count, s, loss, stream);
}

}  // namespace

int64_t burgers_cuda_scratch(const burgers::Args& g) {
  return common_scratch_doubles(shape_of(g.N, g.H, g.W)) + 6 * g.N * g.H * g.W;
}

cudaError_t burgers_cuda_launch(const burgers::Args& g, double* loss, double* grad, double* scratch,
                                cudaStream_t stream) {
  stencil::dispatch_stencil(g.stencil, [&](auto S_) { launch<decltype(S_)::value>(g, loss, grad, scratch, stream); });
  return cudaGetLastError();
}

}  // namespace metaphys
