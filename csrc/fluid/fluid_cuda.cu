// CUDA kernel of metaphys::fluid_loss_grad: the passes of fluid_math.h, one thread per grid point
// (grid-stride loops), and deterministic per-sample reductions (one block per sample, fixed
// strided partial sums + a fixed shared-memory tree). Plain CUDA C++: no ATen headers here.
#include <cuda_runtime.h>

#include "fluid/fluid_cuda.h"
#include "fluid/fluid_math.h"

namespace metaphys {
namespace fluid {
namespace {

constexpr int kThreads = 256;

__device__ double block_sum(double v) {
  __shared__ double buf[kThreads];
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) buf[threadIdx.x] += buf[threadIdx.x + half];
    __syncthreads();
  }
  const double r = buf[0];
  __syncthreads();
  return r;
}

// means[n] = mean of a, means[N + n] = mean of p; one block per sample
__global__ void means_kernel(Args g, double* means) {
  const int64_t n = blockIdx.x;
  const int64_t hw = g.H * g.W;
  const double* a = g.u + n * 2 * hw;
  const double* p = a + hw;
  double sa = 0.0, sp = 0.0;
  for (int64_t k = threadIdx.x; k < hw; k += kThreads) {
    sa += a[k];
    sp += p[k];
  }
  sa = block_sum(sa);
  sp = block_sum(sp);
  if (threadIdx.x == 0) {
    means[n] = sa / (double)hw;
    means[g.N + n] = sp / (double)hw;
  }
}

template <int PASS>
__global__ void pass_kernel(Args g) {
  const int64_t total = g.N * g.H * g.W;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = t % g.W;
    const int64_t i = (t / g.W) % g.H;
    const int64_t n = t / (g.W * g.H);
    if (PASS == 1) fluid_velocity_at(g, n, i, j);
    if (PASS == 2) fluid_residual_at(g, n, i, j);
    if (PASS == 3) fluid_adjoint_at(g, n, i, j);
    if (PASS == 4) fluid_grad_a_at(g, n, i, j);
  }
}

// loss[n] = sum of cell_loss over the sample + gauge terms; one block per sample
__global__ void loss_kernel(Args g, const double* means, double* loss) {
  const int64_t n = blockIdx.x;
  const int64_t hw = g.H * g.W;
  double s = 0.0;
  for (int64_t t = threadIdx.x; t < hw; t += kThreads) s += g.cell_loss[pidx(g, n, t / g.W, t % g.W)];
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const double ma = means[n], mp = means[g.N + n];
    loss[n] = s + g.w_a * ma * ma + g.w_p * mp * mp;
  }
}

}  // namespace

cudaError_t launch_fluid_loss_grad(Args g, double* means, double* loss, cudaStream_t stream) {
  if (g.N == 0) return cudaSuccess;
  g.mean_a = means;
  g.mean_p = means + g.N;
  const int64_t total = g.N * g.H * g.W;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 65535) blocks = 65535;
  const unsigned nb = (unsigned)blocks, ns = (unsigned)g.N;
  means_kernel<<<ns, kThreads, 0, stream>>>(g, means);
  pass_kernel<1><<<nb, kThreads, 0, stream>>>(g);
  pass_kernel<2><<<nb, kThreads, 0, stream>>>(g);
  pass_kernel<3><<<nb, kThreads, 0, stream>>>(g);
  pass_kernel<4><<<nb, kThreads, 0, stream>>>(g);
  loss_kernel<<<ns, kThreads, 0, stream>>>(g, means, loss);
  return cudaGetLastError();
}

}  // namespace fluid
}  // namespace metaphys
