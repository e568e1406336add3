// CPU kernel of metaphys::cloth_loss_grad (schema in csrc/bindings.cpp, math in cloth_math.h).
// Parallel over vertex rows of all samples (at::parallel_for); per-row loss sums are added in a
// fixed order, so results do not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cloth/cloth_check.h"
#include "cloth/cloth_math.h"

namespace metaphys {
namespace {

// Zero the one-cell halo of each of the `planes` padded [H+2, W+2] planes of `work`; every
// interior entry is written by a pass before any pass reads it, so no full zero fill is needed.
void zero_halo(double* work, int64_t planes, int64_t H, int64_t W) {
  const int64_t Hp = H + 2, Wp = W + 2;
  for (int64_t p = 0; p < planes; ++p) {
    double* q = work + p * Hp * Wp;
    std::fill(q, q + Wp, 0.0);
    std::fill(q + (Hp - 1) * Wp, q + Hp * Wp, 0.0);
    for (int64_t i = 1; i < Hp - 1; ++i) {
      q[i * Wp] = 0.0;
      q[i * Wp + Wp - 1] = 0.0;
    }
  }
}

// Scratch memory for the work planes. Up to 64 MiB it is kept per calling thread and grown on
// demand: a fresh multi-megabyte allocation per call costs a page fault per 4 KiB on first touch,
// which at 256^2 doubled the kernel time. Larger requests get a temporary tensor (no memory is
// held between such calls). Each call zeroes the halo it needs and writes every interior entry
// before reading it, so stale contents never leak into a result.
struct Scratch {
  at::Tensor owned;
  double* ptr = nullptr;
};
Scratch work_buffer(int64_t n, const at::TensorOptions& opts) {
  constexpr int64_t kKeepMax = (int64_t(64) << 20) / int64_t(sizeof(double));
  Scratch s;
  if (n > kKeepMax) {
    s.owned = at::empty({n}, opts);
    s.ptr = s.owned.data_ptr<double>();
    return s;
  }
  thread_local std::vector<double> buf;
  if ((int64_t)buf.size() < n) {
    buf.clear();
    buf.shrink_to_fit();
    buf.resize(n);
  }
  s.ptr = buf.data();
  return s;
}

template <typename F>
void for_rows(int64_t rows, int64_t w, const F& f) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, w));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) f(r);
  });
}

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
