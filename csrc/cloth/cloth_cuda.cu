// CUDA kernel of metaphys::cloth_loss_grad: the passes of cloth_math.h, one thread per vertex
// (grid-stride loops), and a deterministic per-sample loss reduction (one block per sample, fixed
// strided partial sums + a fixed shared-memory tree). Plain CUDA C++: no ATen headers here.
#include <cuda_runtime.h>

#include "cloth/cloth_cuda.h"
#include "cloth/cloth_math.h"

namespace metaphys {
namespace cloth {
namespace {

constexpr int kThreads = 256;

template <int PASS>
__global__ void pass_kernel(Args g) {
  const int64_t total = g.N * g.H * g.W;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = t % g.W;
    const int64_t i = (t / g.W) % g.H;
    const int64_t n = t / (g.W * g.H);
    if (PASS == 1) cloth_vertex_at(g, n, i, j);
    if (PASS == 2) cloth_element_at(g, n, i, j);
    if (PASS == 3) cloth_grad_at(g, n, i, j);
  }
}

__global__ void loss_kernel(Args g, double* loss) {
  __shared__ double buf[kThreads];
  const int64_t n = blockIdx.x;
  const int64_t hw = g.H * g.W;
  const double* cell = g.work + (int64_t)kLOSS * plane_size(g);
  double s = 0.0;
  for (int64_t t = threadIdx.x; t < hw; t += kThreads) s += cell[pidx(g, n, t / g.W, t % g.W)];
  buf[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) buf[threadIdx.x] += buf[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[n] = buf[0];
}

}  // namespace

cudaError_t launch_cloth_loss_grad(Args g, double* loss, cudaStream_t stream) {
  if (g.N == 0) return cudaSuccess;
  const int64_t total = g.N * g.H * g.W;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 65535) blocks = 65535;
  const unsigned nb = (unsigned)blocks;
  pass_kernel<1><<<nb, kThreads, 0, stream>>>(g);
  pass_kernel<2><<<nb, kThreads, 0, stream>>>(g);
  pass_kernel<3><<<nb, kThreads, 0, stream>>>(g);
  loss_kernel<<<(unsigned)g.N, kThreads, 0, stream>>>(g, loss);
  return cudaGetLastError();
}

}  // namespace cloth
}  // namespace metaphys
