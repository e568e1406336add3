// diffusion_loss_grad: argument checks and the Args fill, one function for the CPU kernel and the
// CUDA binding.
#pragma once
#include "common/checks.h"
#include "diffusion/diffusion_math.h"

namespace metaphys {

inline diffusion::Args diffusion_args(const at::Tensor& c, const at::Tensor& c_old, const at::Tensor& mask,
                                      const at::Tensor& bc, const at::Tensor& vel, const at::Tensor& source,
                                      const at::Tensor& D, const at::Tensor& dt, int64_t stencil, bool true_grad) {
  check_unknown(c, "c", 1, "the concentration");
  check_field(c, c_old, "c_old", 1);
  check_field(c, mask, "mask", 1);
  check_field(c, bc, "bc", 1);
  check_field(c, vel, "vel", 2);
  check_field(c, source, "source", 1);
  check_per_sample(c, D, "D");
  check_per_sample(c, dt, "dt");
  diffusion::Args g;
  static_cast<stencil::Grid&>(g) = checked_grid(c, stencil, true_grad);
  g.c = c.const_data_ptr<double>();
  g.c_old = c_old.const_data_ptr<double>();
  g.mask = mask.const_data_ptr<double>();
  g.bc = bc.const_data_ptr<double>();
  g.vel = vel.const_data_ptr<double>();
  g.source = source.const_data_ptr<double>();
  g.D = D.const_data_ptr<double>();
  g.dt = dt.const_data_ptr<double>();
  return g;
}

}  // namespace metaphys
