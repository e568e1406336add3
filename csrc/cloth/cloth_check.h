// Entry checks of metaphys::cloth_loss_grad shared by the CPU and CUDA bindings (ATen side).
// Value checks (signs, pin weights in [0,1], finiteness) are done in Python (ClothProblem);
// here: dtype, contiguity, shapes and devices, so the raw-pointer kernels are memory safe.
#pragma once
#include "common/checks.h"

namespace metaphys {

inline void check_cloth_args(const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old,
                             const at::Tensor& pin_w, const at::Tensor& pin_x, const at::Tensor& spheres,
                             const at::Tensor& boxes, const at::Tensor& gravity, const at::Tensor& wind,
                             const at::Tensor* const* params, const char* const* param_names, int n_params) {
  check_f64_contig(a, "a");
  TORCH_CHECK(a.dim() == 4 && a.size(1) == 3, "a must have shape [N, 3, H, W] (x, y, z accelerations), got ",
              a.sizes());
  const int64_t n = a.size(0), h = a.size(2), w = a.size(3);
  TORCH_CHECK(h >= 2 && w >= 2, "cloth grid must be at least 2x2 vertices, got ", h, "x", w);
  check_shape4(x_old, "x_old", n, 3, h, w);
  check_shape4(v_old, "v_old", n, 3, h, w);
  check_shape4(pin_w, "pin_w", n, 1, h, w);
  check_shape4(pin_x, "pin_x", n, 3, h, w);
  check_f64_contig(spheres, "spheres");
  TORCH_CHECK(spheres.dim() == 3 && spheres.size(0) == n && spheres.size(2) == 4,
              "spheres must have shape [N, S, 4] (cx, cy, cz, r), got ", spheres.sizes());
  check_f64_contig(boxes, "boxes");
  TORCH_CHECK(boxes.dim() == 3 && boxes.size(0) == n && boxes.size(2) == 6,
              "boxes must have shape [N, B, 6] (cx, cy, cz, hx, hy, hz), got ", boxes.sizes());
  check_f64_contig(gravity, "gravity");
  TORCH_CHECK(gravity.dim() == 2 && gravity.size(0) == n && gravity.size(1) == 3, "gravity must have shape [N, 3], got ",
              gravity.sizes());
  check_f64_contig(wind, "wind");
  TORCH_CHECK(wind.dim() == 2 && wind.size(0) == n && wind.size(1) == 3, "wind must have shape [N, 3], got ",
              wind.sizes());
  const at::Tensor* t[] = {&x_old, &v_old, &pin_w, &pin_x, &spheres, &boxes, &gravity, &wind};
  const char* tn[] = {"x_old", "v_old", "pin_w", "pin_x", "spheres", "boxes", "gravity", "wind"};
  for (int q = 0; q < 8; ++q) check_same_device(a, *t[q], tn[q]);
  for (int q = 0; q < n_params; ++q) {
    check_param(*params[q], param_names[q], n);
    check_same_device(a, *params[q], param_names[q]);
  }
}

}  // namespace metaphys
