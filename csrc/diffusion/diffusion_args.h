// diffusion_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the
// CUDA binding.
#pragma once
#include "common/checks.h"
#include "diffusion/diffusion_math.h"

namespace metaphys {

inline diffusion::Args diffusion_args(const at::Tensor& c, const at::Tensor& c_old, const at::Tensor& mask,
                                      const at::Tensor& bc, const at::Tensor& vel, const at::Tensor& source,
                                      const at::Tensor& D, const at::Tensor& dt, int64_t stencil, bool true_grad) {
  diffusion::Args g;
  g.c = check_unknown(c, "c", 1, "the concentration");
  g.c_old = check_field(c, c_old, "c_old", 1);
  g.mask = check_field(c, mask, "mask", 1);
  g.bc = check_field(c, bc, "bc", 1);
  g.vel = check_field(c, vel, "vel", 2);
  g.source = check_field(c, source, "source", 1);
  g.D = check_per_sample(c, D, "D");
  g.dt = check_per_sample(c, dt, "dt");
  static_cast<stencil::Grid&>(g) = checked_grid(c, stencil, true_grad);
  return g;
}

}  // namespace metaphys
