// fluid_loss_grad, CUDA entry (compiled only in a CUDA build).
#include <torch/library.h>

#include "common/cuda_binding.h"
#include "fluid/fluid_args.h"
#include "fluid/fluid_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> fluid_loss_grad_cuda(const at::Tensor& u, const at::Tensor& a_old,
                                                       const at::Tensor& mask, const at::Tensor& bc,
                                                       const at::Tensor& force, const at::Tensor& rho,
                                                       const at::Tensor& mu, const at::Tensor& dt, double w_nav,
                                                       double w_bound, double w_a, double w_p) {
  return run_cuda("fluid_loss_grad", u, fluid_args(u, a_old, mask, bc, force, rho, mu, dt, w_nav, w_bound, w_a, w_p),
                  &fluid_cuda_scratch, &fluid_cuda_launch);
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("fluid_loss_grad", &metaphys::fluid_loss_grad_cuda); }
