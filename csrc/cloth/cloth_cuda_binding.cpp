// ATen glue of the CUDA cloth kernel: checks, output/work allocation on the current device,
// NaN-poisoned outputs (a pass that fails to write shows up as NaN), launch on the current stream.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "cloth/cloth_check.h"
#include "cloth/cloth_cuda.h"

namespace metaphys {
namespace {

std::tuple<at::Tensor, at::Tensor> cloth_loss_grad_cuda(
    const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old, const at::Tensor& pin_w,
    const at::Tensor& pin_x, const at::Tensor& spheres, const at::Tensor& boxes, const at::Tensor& gravity,
    const at::Tensor& wind, const at::Tensor& rest, const at::Tensor& k_stretch, const at::Tensor& k_shear,
    const at::Tensor& k_bend, const at::Tensor& mass, const at::Tensor& damping, const at::Tensor& k_pin,
    const at::Tensor& k_contact, const at::Tensor& margin, const at::Tensor& dt) {
  const at::Tensor* params[] = {&rest, &k_stretch, &k_shear, &k_bend, &mass, &damping, &k_pin, &k_contact, &margin, &dt};
  const char* names[] = {"rest", "k_stretch", "k_shear", "k_bend", "mass", "damping", "k_pin", "k_contact", "margin", "dt"};
  check_cloth_args(a, x_old, v_old, pin_w, pin_x, spheres, boxes, gravity, wind, params, names, 10);
  TORCH_CHECK(a.is_cuda(), "cloth_loss_grad (CUDA): a must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(a.device());
  const int64_t N = a.size(0), H = a.size(2), W = a.size(3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor loss = at::full({N}, nan, a.options());
  at::Tensor grad = at::full_like(a, nan);
  if (N == 0) return {loss, grad};
  at::Tensor work = at::zeros({cloth::kWorkPlanes, N, H + 2, W + 2}, a.options());
  cloth::Args g;
  g.a = a.data_ptr<double>();
  g.x_old = x_old.data_ptr<double>();
  g.v_old = v_old.data_ptr<double>();
  g.pin_w = pin_w.data_ptr<double>();
  g.pin_x = pin_x.data_ptr<double>();
  g.spheres = spheres.data_ptr<double>();
  g.boxes = boxes.data_ptr<double>();
  g.gravity = gravity.data_ptr<double>();
  g.wind = wind.data_ptr<double>();
  g.rest = rest.data_ptr<double>();
  g.k_stretch = k_stretch.data_ptr<double>();
  g.k_shear = k_shear.data_ptr<double>();
  g.k_bend = k_bend.data_ptr<double>();
  g.mass = mass.data_ptr<double>();
  g.damping = damping.data_ptr<double>();
  g.k_pin = k_pin.data_ptr<double>();
  g.k_contact = k_contact.data_ptr<double>();
  g.margin = margin.data_ptr<double>();
  g.dt = dt.data_ptr<double>();
  g.N = N;
  g.H = H;
  g.W = W;
  g.S = spheres.size(1);
  g.B = boxes.size(1);
  g.work = work.data_ptr<double>();
  g.grad = grad.data_ptr<double>();
  const cudaError_t err = cloth::launch_cloth_loss_grad(g, loss.data_ptr<double>(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "cloth_loss_grad CUDA launch failed: ", cudaGetErrorString(err));
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CUDA, m) { m.impl("cloth_loss_grad", &cloth_loss_grad_cuda); }

}  // namespace metaphys
