// cloth_loss_grad: argument checks and the Args fill (inputs only; the caller points the work
// planes), one function for the CPU kernel and the CUDA binding. Value checks (signs, pin weights
// in [0,1], finiteness) are done in Python (ClothProblem); here: dtype, contiguity, shapes and
// devices, so the raw-pointer kernels are memory safe.
#pragma once
#include "cloth/cloth_hessian_math.h"
#include "cloth/cloth_math.h"
#include "common/checks.h"

namespace metaphys {

// cloth_hessian's `int project` as a Projection (cloth_hessian_math.h); anything else is refused
inline cloth::Projection checked_projection(int64_t project) {
  TORCH_CHECK(project >= 0 && project <= 2, "cloth_hessian: project must be 0 (exact), 1 (every element "
              "projected to PSD) or 2 (springs and contacts projected), got ", project);
  return static_cast<cloth::Projection>(project);
}

inline cloth::Args cloth_args(const at::Tensor& a, const at::Tensor& x_old, const at::Tensor& v_old,
                              const at::Tensor& pin_w, const at::Tensor& pin_x, const at::Tensor& colliders,
                              const at::Tensor& gravity, const at::Tensor& wind,
                              const at::Tensor& rest, const at::Tensor& k_stretch, const at::Tensor& k_shear,
                              const at::Tensor& k_bend, const at::Tensor& mass, const at::Tensor& damping,
                              const at::Tensor& k_pin, const at::Tensor& k_contact, const at::Tensor& margin,
                              const at::Tensor& dt) {
  cloth::Args g{};
  g.a = check_unknown(a, "a", 3, "x, y, z accelerations");
  check_min_grid(a, 2, 2, "cloth grid (vertices)");
  g.x_old = check_field(a, x_old, "x_old", 3);
  g.v_old = check_field(a, v_old, "v_old", 3);
  g.pin_w = check_field(a, pin_w, "pin_w", 1);
  g.pin_x = check_field(a, pin_x, "pin_x", 3);
  g.colliders = check_per_sample_table(a, colliders, "colliders", true, cloth::kColliderWidth,
                                       "[N, K, 18] (kind, rotation 9, centre 3, parameters 4, friction)");
  g.gravity = check_per_sample_table(a, gravity, "gravity", false, 3, "[N, 3]");
  g.wind = check_per_sample_table(a, wind, "wind", false, 3, "[N, 3]");
  const at::Tensor* params[] = {&rest, &k_stretch, &k_shear, &k_bend, &mass, &damping, &k_pin, &k_contact, &margin, &dt};
  const char* names[] = {"rest", "k_stretch", "k_shear", "k_bend", "mass", "damping", "k_pin", "k_contact", "margin", "dt"};
  const double* cloth::Args::*fields[] = {&cloth::Args::rest,   &cloth::Args::k_stretch, &cloth::Args::k_shear,
                                          &cloth::Args::k_bend, &cloth::Args::mass,      &cloth::Args::damping,
                                          &cloth::Args::k_pin,  &cloth::Args::k_contact, &cloth::Args::margin,
                                          &cloth::Args::dt};
  for (int q = 0; q < 10; ++q) g.*fields[q] = check_per_sample(a, *params[q], names[q]);
  g.N = a.size(0);
  g.H = a.size(2);
  g.W = a.size(3);
  g.K = colliders.size(1);
  return g;
}

}  // namespace metaphys
