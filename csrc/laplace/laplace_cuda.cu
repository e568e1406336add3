// laplace_loss_grad, CUDA twin of laplace_cpu.cpp (same formulas, see there):
//   r = L(u~) + f, q = free*r, loss = sum(q*r)/N;  pseudo grad = 2/N*w_c*free*q;  true grad = 2/N*free*L(q).
#include "common/stencil_cuda.cuh"
#include "laplace/laplace_cuda.h"

namespace metaphys {
namespace {

using namespace cudak;

// Residual, per-block loss partials, and the pseudo-gradient (TrueGrad: q for the second pass).
template <int S, bool TrueGrad>
__global__ void laplace_residual_kernel(const double* __restrict__ u, const double* __restrict__ mask,
                                        const double* __restrict__ bc, const double* __restrict__ f,
                                        const double* __restrict__ count, double* __restrict__ grad,
                                        double* __restrict__ q, double* __restrict__ partials, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  const int64_t n = blockIdx.z;
  const int64_t base = n * H * W;
  double contrib = 0.0;
  if (i < H && j < W) {
    const auto ut = [&](int ii, int jj) {
      const int64_t k = base + static_cast<int64_t>(ii) * W + jj;
      return mask[k] * bc[k] + (1.0 - mask[k]) * u[k];
    };
    const int64_t k = base + static_cast<int64_t>(i) * W + j;
    const double fr = 1.0 - mask[k];
    const double r = laplacian<S, false>(ut, i, j, H, W) + f[k];
    const double qq = fr * r;
    contrib = qq * r;
    if constexpr (TrueGrad) {
      q[k] = qq;
    } else {
      grad[k] = (2.0 / count[n]) * centre<S>() * fr * qq;
    }
  }
  const double s = block_sum(contrib);
  if (is_block_leader()) partials[block_slot()] = s;
}

// True gradient: 2/N * free * L(q) (the stencil is symmetric).
template <int S>
__global__ void laplace_true_grad_kernel(const double* __restrict__ mask, const double* __restrict__ q,
                                         const double* __restrict__ count, double* __restrict__ grad, int H, int W) {
  const int j = static_cast<int>(blockIdx.x) * kTileX + static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.y) * kTileY + static_cast<int>(threadIdx.y);
  if (i >= H || j >= W) return;
  const int64_t n = blockIdx.z;
  const int64_t base = n * H * W;
  const auto qf = [&](int ii, int jj) { return q[base + static_cast<int64_t>(ii) * W + jj]; };
  const int64_t k = base + static_cast<int64_t>(i) * W + j;
  grad[k] = (2.0 / count[n]) * (1.0 - mask[k]) * laplacian<S, false>(qf, i, j, H, W);
}

template <int S>
void launch(const double* u, const double* mask, const double* bc, const double* f, double* loss, double* grad,
            double* scratch, const Shape& s, bool true_grad, cudaStream_t stream) {
  double* count = scratch;
  double* partials = count + s.N;
  double* q = partials + s.N * s.blocks_per_sample();
  launch_free_counts(mask, s, 1.0, partials, count, stream);
  if (true_grad) {
    laplace_residual_kernel<S, true><<<s.grid(), s.block(), 0, stream>>>(u, mask, bc, f, count, grad, q, partials,
                                                                         s.H, s.W);
    laplace_true_grad_kernel<S><<<s.grid(), s.block(), 0, stream>>>(mask, q, count, grad, s.H, s.W);
  } else {
    laplace_residual_kernel<S, false><<<s.grid(), s.block(), 0, stream>>>(u, mask, bc, f, count, grad, q, partials,
                                                                          s.H, s.W);
  }
  launch_finish_loss(partials, count, s, loss, stream);
}

}  // namespace

int64_t laplace_cuda_scratch_doubles(int64_t N, int64_t H, int64_t W, bool true_grad) {
  const Shape s{N, static_cast<int>(H), static_cast<int>(W)};
  return common_scratch_doubles(s) + (true_grad ? N * H * W : 0);
}

cudaError_t laplace_cuda_launch(const double* u, const double* mask, const double* bc, const double* f, double* loss,
                                double* grad, double* scratch, int64_t N, int64_t H, int64_t W, int stencil,
                                bool true_grad, cudaStream_t stream) {
  const Shape s{N, static_cast<int>(H), static_cast<int>(W)};
  if (stencil == 9) {
    launch<9>(u, mask, bc, f, loss, grad, scratch, s, true_grad, stream);
  } else {
    launch<5>(u, mask, bc, f, loss, grad, scratch, s, true_grad, stream);
  }
  return cudaGetLastError();
}

}  // namespace metaphys
