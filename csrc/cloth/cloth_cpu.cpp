// CPU kernel of metaphys::cloth_loss_grad (schema in csrc/bindings.cpp, math in cloth_math.h).
// Parallel over vertex rows of all samples (at::parallel_for); per-row loss sums are added in a
// fixed order, so results do not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cloth/cloth_check.h"
#include "common/workspace.h"
#include "cloth/cloth_math.h"

namespace metaphys {
namespace {

using workspace::Scratch;
using workspace::for_rows;
using workspace::work_buffer;
using workspace::zero_halo;

std::tuple<at::Tensor, at::Tensor> cloth_loss_grad_cpu(
    const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old, const at::Tensor& pin_w,
    const at::Tensor& pin_x, const at::Tensor& spheres, const at::Tensor& boxes, const at::Tensor& gravity,
    const at::Tensor& wind, const at::Tensor& rest, const at::Tensor& k_stretch, const at::Tensor& k_shear,
    const at::Tensor& k_bend, const at::Tensor& mass, const at::Tensor& damping, const at::Tensor& k_pin,
    const at::Tensor& k_contact, const at::Tensor& margin, const at::Tensor& dt) {
  const at::Tensor* params[] = {&rest, &k_stretch, &k_shear, &k_bend, &mass, &damping, &k_pin, &k_contact, &margin, &dt};
  const char* names[] = {"rest", "k_stretch", "k_shear", "k_bend", "mass", "damping", "k_pin", "k_contact", "margin", "dt"};
  check_cloth_args(a, x_old, v_old, pin_w, pin_x, spheres, boxes, gravity, wind, params, names, 10);
  const int64_t N = a.size(0), H = a.size(2), W = a.size(3);
  at::Tensor loss = at::empty({N}, a.options());
  at::Tensor grad = at::empty_like(a);
  if (N == 0) return {loss, grad};
  Scratch work = work_buffer(cloth::kWorkPlanes * N * (H + 2) * (W + 2), a.options());
  zero_halo(work.ptr, cloth::kWorkPlanes * N, H, W);  // the halo must read 0

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
  g.work = work.ptr;
  g.grad = grad.data_ptr<double>();

  for_rows(N * H, W, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) cloth::cloth_vertex_at(g, r / H, r % H, j);
  });
  std::vector<double> rows_loss(N * H);
  const double* cell = g.work + cloth::kLOSS * cloth::plane_size(g);
  for_rows(N * H, W, [&](int64_t r) {
    double s = 0.0;
    for (int64_t j = 0; j < W; ++j) {
      cloth::cloth_element_at(g, r / H, r % H, j);
      s += cell[cloth::pidx(g, r / H, r % H, j)];
    }
    rows_loss[r] = s;
  });
  for_rows(N * H, W, [&](int64_t r) {
    for (int64_t j = 0; j < W; ++j) cloth::cloth_grad_at(g, r / H, r % H, j);
  });
  double* lp = loss.data_ptr<double>();
  for (int64_t n = 0; n < N; ++n) {
    double s = 0.0;
    for (int64_t i = 0; i < H; ++i) s += rows_loss[n * H + i];
    lp[n] = s;
  }
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(metaphys, CPU, m) { m.impl("cloth_loss_grad", &cloth_loss_grad_cpu); }

}  // namespace metaphys
