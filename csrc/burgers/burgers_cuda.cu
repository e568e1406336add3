// burgers_loss_grad, CUDA twin of burgers_cpu.cpp (same formulas, periodic stencils, see there):
//   r_c = (v~_c - v_old_c)/dt + (v~_0*Dx_c(v~_c) + v~_1*Dy_c(v~_c)) - mu*L(v~_c), q_c = free*r_c
//   G_d = q_d/dt - Dx_c(v~_0 q_d) - Dy_c(v~_1 q_d) + s_d - mu*(true ? L(q_d) : w_c*q_d),
//   s_0 = sum_c q_c Dx_c(v~_c), s_1 = sum_c q_c Dy_c(v~_c);  grad_d = 2/N * free * G_d
#include "common/stencil_cuda.cuh"
#include "burgers/burgers_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;

// v~ = m*b + (1-m)*v for both channels into vt [N, 2, H, W].
__global__ void burgers_impose_kernel(const double* __restrict__ v, const double* __restrict__ mask,
                                      const double* __restrict__ bc, double* __restrict__ vt, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  if (i >= H || j >= W) return;
  const int64_t n = blockIdx.z;
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t cell = static_cast<int64_t>(i) * W + j;
  const double m = mask[n * HW + cell];
  for (int ch = 0; ch < 2; ++ch) {
    const int64_t k = (2 * n + ch) * HW + cell;
    vt[k] = m * bc[k] + (1.0 - m) * v[k];
  }
}

// Residuals of both channels, loss partials, q_c and the pointwise advection term s_d.
template <int S>
__global__ void burgers_residual_kernel(const double* __restrict__ vt, const double* __restrict__ v_old,
                                        const double* __restrict__ mask, const double* __restrict__ mu,
                                        const double* __restrict__ dt, double* __restrict__ q,
                                        double* __restrict__ sd, double* __restrict__ partials, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  const int64_t n = blockIdx.z;
  const int64_t HW = static_cast<int64_t>(H) * W;
  double contrib = 0.0;
  if (i < H && j < W) {
    const int64_t cell = static_cast<int64_t>(i) * W + j;
    const double fr = 1.0 - mask[n * HW + cell];
    const double mun = mu[n], dtn = dt[n];
    const double* t0 = vt + 2 * n * HW;
    const double* t1 = t0 + HW;
    const double ux = t0[cell], uy = t1[cell];
    double qc[2], dx[2], dy[2];
    for (int ch = 0; ch < 2; ++ch) {
      const double* tc = ch == 0 ? t0 : t1;
      const auto f = [&](int ii, int jj) { return tc[static_cast<int64_t>(ii) * W + jj]; };
      dx[ch] = dx_c<true>(f, i, j, H, W);
      dy[ch] = dy_c<true>(f, i, j, H, W);
      const double r = (tc[cell] - v_old[(2 * n + ch) * HW + cell]) / dtn + (ux * dx[ch] + uy * dy[ch]) -
                       mun * laplacian<S, true>(f, i, j, H, W);
      qc[ch] = fr * r;
      contrib += qc[ch] * r;
    }
    q[2 * n * HW + cell] = qc[0];
    q[(2 * n + 1) * HW + cell] = qc[1];
    sd[2 * n * HW + cell] = qc[0] * dx[0] + qc[1] * dx[1];
    sd[(2 * n + 1) * HW + cell] = qc[0] * dy[0] + qc[1] * dy[1];
  }
  const double s = block_sum(contrib);
  if (is_block_leader()) partials[block_slot()] = s;
}

template <int S, bool TrueGrad>
__global__ void burgers_grad_kernel(const double* __restrict__ vt, const double* __restrict__ mask,
                                    const double* __restrict__ mu, const double* __restrict__ dt,
                                    const double* __restrict__ q, const double* __restrict__ sd,
                                    const double* __restrict__ count, double* __restrict__ grad, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  if (i >= H || j >= W) return;
  const int64_t n = blockIdx.z;
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t cell = static_cast<int64_t>(i) * W + j;
  const double scale = (2.0 / count[n]) * (1.0 - mask[n * HW + cell]);
  const double mun = mu[n], dtn = dt[n];
  const double* t0 = vt + 2 * n * HW;
  const double* t1 = t0 + HW;
  for (int ch = 0; ch < 2; ++ch) {
    const double* qd = q + (2 * n + ch) * HW;
    const auto qf = [&](int ii, int jj) { return qd[static_cast<int64_t>(ii) * W + jj]; };
    const auto pxf = [&](int ii, int jj) {
      const int64_t k = static_cast<int64_t>(ii) * W + jj;
      return t0[k] * qd[k];
    };
    const auto pyf = [&](int ii, int jj) {
      const int64_t k = static_cast<int64_t>(ii) * W + jj;
      return t1[k] * qd[k];
    };
    double lap;
    if constexpr (TrueGrad) {
      lap = laplacian<S, true>(qf, i, j, H, W);
    } else {
      lap = centre<S>() * qd[cell];
    }
    const double g = qd[cell] / dtn - (dx_c<true>(pxf, i, j, H, W) + dy_c<true>(pyf, i, j, H, W)) +
                     sd[(2 * n + ch) * HW + cell] - mun * lap;
    grad[(2 * n + ch) * HW + cell] = scale * g;
  }
}

template <int S>
void launch(const double* v, const double* v_old, const double* mask, const double* bc, const double* mu,
            const double* dt, double* loss, double* grad, double* scratch, const Shape& s, bool true_grad,
            cudaStream_t stream) {
  double* count = scratch;
  double* partials = count + s.N;
  double* vt = partials + s.N * s.blocks_per_sample();
  double* q = vt + 2 * s.N * s.plane();
  double* sd = q + 2 * s.N * s.plane();
  launch_free_counts(mask, s, 2.0, partials, count, stream);
  burgers_impose_kernel<<<s.grid(), s.block(), 0, stream>>>(v, mask, bc, vt, s.H, s.W);
  burgers_residual_kernel<S><<<s.grid(), s.block(), 0, stream>>>(vt, v_old, mask, mu, dt, q, sd, partials, s.H, s.W);
  if (true_grad) {
    burgers_grad_kernel<S, true><<<s.grid(), s.block(), 0, stream>>>(vt, mask, mu, dt, q, sd, count, grad, s.H, s.W);
  } else {
    burgers_grad_kernel<S, false><<<s.grid(), s.block(), 0, stream>>>(vt, mask, mu, dt, q, sd, count, grad, s.H, s.W);
  }
  launch_finish_loss(partials, count, s, loss, stream);
}

}  // namespace

int64_t burgers_cuda_scratch_doubles(int64_t N, int64_t H, int64_t W, bool /*true_grad*/) {
  const Shape s{N, static_cast<int>(H), static_cast<int>(W)};
  return common_scratch_doubles(s) + 6 * N * H * W;
}

cudaError_t burgers_cuda_launch(const double* v, const double* v_old, const double* mask, const double* bc,
                                const double* mu, const double* dt, double* loss, double* grad, double* scratch,
                                int64_t N, int64_t H, int64_t W, int stencil, bool true_grad, cudaStream_t stream) {
  const Shape s{N, static_cast<int>(H), static_cast<int>(W)};
  if (stencil == 9) {
    launch<9>(v, v_old, mask, bc, mu, dt, loss, grad, scratch, s, true_grad, stream);
  } else {
    launch<5>(v, v_old, mask, bc, mu, dt, loss, grad, scratch, s, true_grad, stream);
  }
  return cudaGetLastError();
}

}  // namespace metaphys
