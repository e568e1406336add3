// ATen glue of the CUDA fluid kernel: checks, output/work allocation on the current device,
// NaN-poisoned outputs (a pass that fails to write shows up as NaN), launch on the current stream.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "fluid/fluid_check.h"
#include "fluid/fluid_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> fluid_loss_grad_cuda(const at::Tensor& u, const at::Tensor& a_old,
                                                       const at::Tensor& mask, const at::Tensor& bc,
                                                       const at::Tensor& force, const at::Tensor& rho,
                                                       const at::Tensor& mu, const at::Tensor& dt, double w_nav,
                                                       double w_bound, double w_a, double w_p) {
  check_fluid_args(u, a_old, mask, bc, force, rho, mu, dt, w_nav, w_bound, w_a, w_p);
  TORCH_CHECK(u.is_cuda(), "fluid_loss_grad (CUDA): u must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(u.device());
  const int64_t N = u.size(0), H = u.size(2), W = u.size(3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor loss = at::full({N}, nan, u.options());
  at::Tensor grad = at::full_like(u, nan);
  if (N == 0) return {loss, grad};
  at::Tensor work = at::zeros({fluid::kWorkPlanes, N, H + 2, W + 2}, u.options());
  at::Tensor means = at::empty({2 * N}, u.options());
  fluid::Args g;
  g.u = u.data_ptr<double>();
  g.a_old = a_old.data_ptr<double>();
  g.mask = mask.data_ptr<double>();
  g.bc = bc.data_ptr<double>();
  g.force = force.data_ptr<double>();
  g.rho = rho.data_ptr<double>();
  g.mu = mu.data_ptr<double>();
  g.dt = dt.data_ptr<double>();
  g.w_nav = w_nav;
  g.w_bound = w_bound;
  g.w_a = w_a;
  g.w_p = w_p;
  g.N = N;
  g.H = H;
  g.W = W;
  fluid::assign_work(g, work.data_ptr<double>());
  g.mean_a = nullptr;
  g.mean_p = nullptr;
  g.grad = grad.data_ptr<double>();
  const cudaError_t err = fluid::launch_fluid_loss_grad(g, means.data_ptr<double>(), loss.data_ptr<double>(),
                                                        c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "fluid_loss_grad CUDA launch failed: ", cudaGetErrorString(err));
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("fluid_loss_grad", &fluid_loss_grad_cuda); }

}  // namespace metaphys
