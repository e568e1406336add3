// cloth_loss_grad, CUDA entry (compiled only in a CUDA build).
#include <torch/library.h>

#include "cloth/cloth_args.h"
#include "cloth/cloth_cuda.h"
#include "common/cuda_binding.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> cloth_loss_grad_cuda(
    const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old, const at::Tensor& pin_w,
    const at::Tensor& pin_x, const at::Tensor& colliders, const at::Tensor& gravity,
    const at::Tensor& wind, const at::Tensor& rest, const at::Tensor& k_stretch, const at::Tensor& k_shear,
    const at::Tensor& k_bend, const at::Tensor& mass, const at::Tensor& damping, const at::Tensor& k_pin,
    const at::Tensor& k_contact, const at::Tensor& margin, const at::Tensor& dt) {
  return run_cuda("cloth_loss_grad", a,
                  cloth_args(a, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, rest, k_stretch, k_shear,
                             k_bend, mass, damping, k_pin, k_contact, margin, dt),
                  &cloth_cuda_scratch, &cloth_cuda_launch);
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("cloth_loss_grad", &metaphys::cloth_loss_grad_cuda); }
