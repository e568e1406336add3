// wave_loss_grad, CUDA twin of wave_cpu.cpp (same formulas, see there):
//   v_new = free*(v_old + dt*a), x_new = m*b + free*(x_old + dt*v_new), xm = (x_new + x_old)/2
//   r = (v_new - v_old)/dt - c^2*L(xm), q = free*r
//   pseudo grad = 2/N * q * (free - c^2*w_c*free^2*dt^2/2);  true grad = 2/N * (free*q - c^2*free^2*dt^2/2 * L(q))
#include "common/stencil_cuda.cuh"
#include "wave/wave_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;

// xm = (x_new + x_old)/2 for every cell (read by its neighbours' residuals).
__global__ void wave_midpoint_kernel(const double* __restrict__ a, const double* __restrict__ x_old,
                                     const double* __restrict__ v_old, const double* __restrict__ mask,
                                     const double* __restrict__ bc, const double* __restrict__ dt,
                                     double* __restrict__ xm, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  if (i >= H || j >= W) return;
  const int64_t n = blockIdx.z;
  const int64_t k = n * H * W + static_cast<int64_t>(i) * W + j;
  const double dtn = dt[n];
  const double fr = 1.0 - mask[k];
  const double vn = fr * (v_old[k] + dtn * a[k]);
  const double xn = mask[k] * bc[k] + fr * (x_old[k] + dtn * vn);
  xm[k] = 0.5 * (xn + x_old[k]);
}

template <int S, bool TrueGrad>
__global__ void wave_residual_kernel(const double* __restrict__ a, const double* __restrict__ v_old,
                                     const double* __restrict__ mask, const double* __restrict__ c,
                                     const double* __restrict__ dt, const double* __restrict__ xm,
                                     const double* __restrict__ count, double* __restrict__ grad,
                                     double* __restrict__ q, double* __restrict__ partials, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  const int64_t n = blockIdx.z;
  const int64_t base = n * H * W;
  double contrib = 0.0;
  if (i < H && j < W) {
    const auto xf = [&](int ii, int jj) { return xm[base + static_cast<int64_t>(ii) * W + jj]; };
    const int64_t k = base + static_cast<int64_t>(i) * W + j;
    const double dtn = dt[n], c2 = c[n] * c[n];
    const double fr = 1.0 - mask[k];
    const double vn = fr * (v_old[k] + dtn * a[k]);
    const double r = (vn - v_old[k]) / dtn - c2 * laplacian<S, false>(xf, i, j, H, W);
    const double qq = fr * r;
    contrib = qq * r;
    if constexpr (TrueGrad) {
      q[k] = qq;
    } else {
      grad[k] = (2.0 / count[n]) * qq * (fr - c2 * centre<S>() * 0.5 * fr * fr * dtn * dtn);
    }
  }
  const double s = block_sum(contrib);
  if (is_block_leader()) partials[block_slot()] = s;
}

template <int S>
__global__ void wave_true_grad_kernel(const double* __restrict__ mask, const double* __restrict__ c,
                                      const double* __restrict__ dt, const double* __restrict__ q,
                                      const double* __restrict__ count, double* __restrict__ grad, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  if (i >= H || j >= W) return;
  const int64_t n = blockIdx.z;
  const int64_t base = n * H * W;
  const auto qf = [&](int ii, int jj) { return q[base + static_cast<int64_t>(ii) * W + jj]; };
  const int64_t k = base + static_cast<int64_t>(i) * W + j;
  const double dtn = dt[n], c2 = c[n] * c[n];
  const double fr = 1.0 - mask[k];
  grad[k] = (2.0 / count[n]) * (fr * qf(i, j) - c2 * 0.5 * fr * fr * dtn * dtn * laplacian<S, false>(qf, i, j, H, W));
}

template <int S>
void launch(const double* a, const double* x_old, const double* v_old, const double* mask, const double* bc,
            const double* c, const double* dt, double* loss, double* grad, double* scratch, const Shape& s,
            bool true_grad, cudaStream_t stream) {
  double* count = scratch;
  double* partials = count + s.N;
  double* xm = partials + s.N * s.blocks_per_sample();
  double* q = xm + s.N * s.plane();
  launch_free_counts(mask, s, 1.0, partials, count, stream);
  wave_midpoint_kernel<<<s.grid(), s.block(), 0, stream>>>(a, x_old, v_old, mask, bc, dt, xm, s.H, s.W);
  if (true_grad) {
    wave_residual_kernel<S, true><<<s.grid(), s.block(), 0, stream>>>(a, v_old, mask, c, dt, xm, count, grad, q,
                                                                      partials, s.H, s.W);
    wave_true_grad_kernel<S><<<s.grid(), s.block(), 0, stream>>>(mask, c, dt, q, count, grad, s.H, s.W);
  } else {
    wave_residual_kernel<S, false><<<s.grid(), s.block(), 0, stream>>>(a, v_old, mask, c, dt, xm, count, grad, q,
                                                                       partials, s.H, s.W);
  }
  launch_finish_loss(partials, count, s, loss, stream);
}

}  // namespace

int64_t wave_cuda_scratch_doubles(int64_t N, int64_t H, int64_t W, bool true_grad) {
  const Shape s{N, static_cast<int>(H), static_cast<int>(W)};
  return common_scratch_doubles(s) + (true_grad ? 2 : 1) * N * H * W;
}

cudaError_t wave_cuda_launch(const double* a, const double* x_old, const double* v_old, const double* mask,
                             const double* bc, const double* c, const double* dt, double* loss, double* grad,
                             double* scratch, int64_t N, int64_t H, int64_t W, int stencil, bool true_grad,
                             cudaStream_t stream) {
  const Shape s{N, static_cast<int>(H), static_cast<int>(W)};
  if (stencil == 9) {
    launch<9>(a, x_old, v_old, mask, bc, c, dt, loss, grad, scratch, s, true_grad, stream);
  } else {
    launch<5>(a, x_old, v_old, mask, bc, c, dt, loss, grad, scratch, s, true_grad, stream);
  }
  return cudaGetLastError();
}

}  // namespace metaphys
