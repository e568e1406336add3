// fluid_loss_grad: argument checks and the Args fill (inputs only; the caller points the work planes
// and the means), one function for the CPU kernel and the CUDA binding.
#pragma once
#include "common/checks.h"
#include "fluid/fluid_math.h"

namespace metaphys {

inline fluid::Args fluid_args(const at::Tensor& u, const at::Tensor& a_old, const at::Tensor& mask,
                              const at::Tensor& bc, const at::Tensor& force, const at::Tensor& rho,
                              const at::Tensor& mu, const at::Tensor& dt, double w_nav, double w_bound, double w_a,
                              double w_p) {
  fluid::Args g{};
  g.u = check_unknown(u, "u", 2, "vector potential a, pressure p");
  check_min_grid(u, 3, 3, "fluid grid");
  g.a_old = check_field(u, a_old, "a_old", 1);
  g.mask = check_field(u, mask, "mask", 1);
  g.bc = check_field(u, bc, "bc", 2);
  g.force = check_field(u, force, "force", 2);
  g.rho = check_per_sample(u, rho, "rho");
  g.mu = check_per_sample(u, mu, "mu");
  g.dt = check_per_sample(u, dt, "dt");
  g.w_nav = check_weight(w_nav, "w_nav");
  g.w_bound = check_weight(w_bound, "w_bound");
  g.w_a = check_weight(w_a, "w_a");
  g.w_p = check_weight(w_p, "w_p");
  g.N = u.size(0);
  g.H = u.size(2);
  g.W = u.size(3);
  return g;
}

}  // namespace metaphys
