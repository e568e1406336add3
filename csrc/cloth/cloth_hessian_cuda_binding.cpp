// cloth_hessian, CUDA entry (compiled only in a CUDA build). One output, so not run_cuda (which
// returns (loss, grad)) but its steps: device guard, NaN-poisoned output, one scratch tensor, the
// current torch stream, the one error check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "cloth/cloth_args.h"
#include "cloth/cloth_hessian_cuda.h"

namespace metaphys {
namespace {

at::Tensor cloth_hessian_cuda(const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old,
                              const at::Tensor& pin_w, const at::Tensor& pin_x, const at::Tensor& colliders,
                              const at::Tensor& gravity, const at::Tensor& wind,
                              const at::Tensor& rest, const at::Tensor& k_stretch, const at::Tensor& k_shear,
                              const at::Tensor& k_bend, const at::Tensor& mass, const at::Tensor& damping,
                              const at::Tensor& k_pin, const at::Tensor& k_contact, const at::Tensor& margin,
                              const at::Tensor& dt, int64_t project) {
  cloth::HArgs h{};
  h.g = cloth_args(a, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, rest, k_stretch, k_shear, k_bend,
                   mass, damping, k_pin, k_contact, margin, dt);
  h.project = checked_projection(project);
  check_cuda_launchable(a, "cloth_hessian");
  const c10::cuda::CUDAGuard guard(a.device());
  at::Tensor blocks = at::full({a.size(0), cloth::kHOffsets, 3, 3, a.size(2), a.size(3)},
                               std::numeric_limits<double>::quiet_NaN(), a.options());
  if (a.numel() == 0) return blocks.zero_();
  at::Tensor scratch = at::empty({cloth_hessian_cuda_scratch(h)}, a.options());
  C10_CUDA_CHECK(cloth_hessian_cuda_launch(h, blocks.mutable_data_ptr<double>(), scratch.mutable_data_ptr<double>(),
                                           c10::cuda::getCurrentCUDAStream(a.device().index()).stream()));
  return blocks;
}

}  // namespace
}  // namespace metaphys

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("cloth_hessian", &metaphys::cloth_hessian_cuda); }
