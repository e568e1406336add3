// diffusion_loss_grad, CUDA twin of diffusion_cpu.cpp (same formulas, see there):
//   r = (c~ - c_old)/dt - D*L(c~) + v_x*Dx_c(c~) + v_y*Dy_c(c~) + div(v)*c~ - R,  q = free*r
//   pseudo grad = 2/N * free * (1/dt - D*w_c + div v) * q
//   true grad   = 2/N * free * (q/dt - D*L(q) - Dx_c(v_x q) - Dy_c(v_y q) + div(v)*q)
#include "common/stencil_cuda.cuh"
#include "diffusion/diffusion_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;

template <int S, bool TrueGrad>
__global__ void diffusion_residual_kernel(const double* __restrict__ c, const double* __restrict__ c_old,
                                          const double* __restrict__ mask, const double* __restrict__ bc,
                                          const double* __restrict__ vel, const double* __restrict__ source,
                                          const double* __restrict__ D, const double* __restrict__ dt,
                                          const double* __restrict__ count, double* __restrict__ grad,
                                          double* __restrict__ q, double* __restrict__ partials, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  const int64_t n = blockIdx.z;
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t base = n * HW;
  double contrib = 0.0;
  if (i < H && j < W) {
    const auto ct = [&](int ii, int jj) {
      const int64_t k = base + static_cast<int64_t>(ii) * W + jj;
      return mask[k] * bc[k] + (1.0 - mask[k]) * c[k];
    };
    const auto vy = [&](int ii, int jj) { return vel[2 * base + static_cast<int64_t>(ii) * W + jj]; };
    const auto vx = [&](int ii, int jj) { return vel[2 * base + HW + static_cast<int64_t>(ii) * W + jj]; };
    const int64_t k = base + static_cast<int64_t>(i) * W + j;
    const double fr = 1.0 - mask[k];
    const double cc = ct(i, j);
    const double Dn = D[n], dtn = dt[n];
    const double div = dx_c<false>(vx, i, j, H, W) + dy_c<false>(vy, i, j, H, W);
    const double r = (cc - c_old[k]) / dtn - Dn * laplacian<S, false>(ct, i, j, H, W) +
                     vx(i, j) * dx_c<false>(ct, i, j, H, W) + vy(i, j) * dy_c<false>(ct, i, j, H, W) + div * cc -
                     source[k];
    const double qq = fr * r;
    contrib = qq * r;
    if constexpr (TrueGrad) {
      q[k] = qq;
    } else {
      grad[k] = (2.0 / count[n]) * fr * (1.0 / dtn - Dn * centre<S>() + div) * qq;
    }
  }
  const double s = block_sum(contrib);
  if (is_block_leader()) partials[block_slot()] = s;
}

template <int S>
__global__ void diffusion_true_grad_kernel(const double* __restrict__ mask, const double* __restrict__ vel,
                                           const double* __restrict__ D, const double* __restrict__ dt,
                                           const double* __restrict__ q, const double* __restrict__ count,
                                           double* __restrict__ grad, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  if (i >= H || j >= W) return;
  const int64_t n = blockIdx.z;
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t base = n * HW;
  const auto qf = [&](int ii, int jj) { return q[base + static_cast<int64_t>(ii) * W + jj]; };
  const auto vy = [&](int ii, int jj) { return vel[2 * base + static_cast<int64_t>(ii) * W + jj]; };
  const auto vx = [&](int ii, int jj) { return vel[2 * base + HW + static_cast<int64_t>(ii) * W + jj]; };
  const auto vxq = [&](int ii, int jj) { return vx(ii, jj) * qf(ii, jj); };
  const auto vyq = [&](int ii, int jj) { return vy(ii, jj) * qf(ii, jj); };
  const int64_t k = base + static_cast<int64_t>(i) * W + j;
  const double qq = qf(i, j);
  const double div = dx_c<false>(vx, i, j, H, W) + dy_c<false>(vy, i, j, H, W);
  const double g = qq / dt[n] - D[n] * laplacian<S, false>(qf, i, j, H, W) - dx_c<false>(vxq, i, j, H, W) -
                   dy_c<false>(vyq, i, j, H, W) + div * qq;
  grad[k] = (2.0 / count[n]) * (1.0 - mask[k]) * g;
}

template <int S>
void launch(const double* c, const double* c_old, const double* mask, const double* bc, const double* vel,
            const double* source, const double* D, const double* dt, double* loss, double* grad, double* scratch,
            const Shape& s, bool true_grad, cudaStream_t stream) {
  double* count = scratch;
  double* partials = count + s.N;
  double* q = partials + s.N * s.blocks_per_sample();
  launch_free_counts(mask, s, 1.0, partials, count, stream);
  if (true_grad) {
    diffusion_residual_kernel<S, true><<<s.grid(), s.block(), 0, stream>>>(c, c_old, mask, bc, vel, source, D, dt,
                                                                           count, grad, q, partials, s.H, s.W);
    diffusion_true_grad_kernel<S><<<s.grid(), s.block(), 0, stream>>>(mask, vel, D, dt, q, count, grad, s.H, s.W);
  } else {
    diffusion_residual_kernel<S, false><<<s.grid(), s.block(), 0, stream>>>(c, c_old, mask, bc, vel, source, D, dt,
                                                                            count, grad, q, partials, s.H, s.W);
  }
  launch_finish_loss(partials, count, s, loss, stream);
}

}  // namespace

int64_t diffusion_cuda_scratch_doubles(int64_t N, int64_t H, int64_t W, bool true_grad) {
  const Shape s{N, static_cast<int>(H), static_cast<int>(W)};
  return common_scratch_doubles(s) + (true_grad ? N * H * W : 0);
}

cudaError_t diffusion_cuda_launch(const double* c, const double* c_old, const double* mask, const double* bc,
                                  const double* vel, const double* source, const double* D, const double* dt,
                                  double* loss, double* grad, double* scratch, int64_t N, int64_t H, int64_t W,
                                  int stencil, bool true_grad, cudaStream_t stream) {
  const Shape s{N, static_cast<int>(H), static_cast<int>(W)};
  if (stencil == 9) {
    launch<9>(c, c_old, mask, bc, vel, source, D, dt, loss, grad, scratch, s, true_grad, stream);
  } else {
    launch<5>(c, c_old, mask, bc, vel, source, D, dt, loss, grad, scratch, s, true_grad, stream);
  }
  return cudaGetLastError();
}

}  // namespace metaphys
