"""Wave equation, Crank-Nicolson in time, unknown = acceleration a of a height field x.

Within a step: v_new = v_old + dt*a, x_new = x_old + dt*v_new; on Dirichlet cells v_new = 0 and
x_new = b. Residual: r = (v_new - v_old)/dt - c^2 * L((x_new + x_old)/2), neighbours of L
detached in the pseudo-gradient. c, dt: per-sample tensors [N]. Warm start of a step: a = 0.
"""
from __future__ import annotations

import torch

from metaphys.physics import checks, stencils
from metaphys.physics.base import Problem, masked_mse_and_grad
from metaphys.physics.laplace import validate_scalar_inputs


def wave_state_update(a, x_old, v_old, mask, bc, dt):
    """(x_new, v_new) after one step with acceleration a; Dirichlet cells: x = b, v = 0."""
    free = 1 - mask
    dtn = dt.view(-1, 1, 1, 1)
    v_new = free * (v_old + dtn * a)
    x_new = mask * bc + free * (x_old + dtn * v_new)
    return x_new, v_new


def wave_twin(a, x_old, v_old, mask, bc, c, dt, stencil: int, true_grad: bool):
    """PyTorch twin of the ``wave_loss_grad`` kernel: (loss [N], grad [N,1,H,W])."""
    free = 1 - mask
    c2, dtn = (c * c).view(-1, 1, 1, 1), dt.view(-1, 1, 1, 1)

    def residual(aa):
        x_new, v_new = wave_state_update(aa, x_old, v_old, mask, bc, dt)
        return (v_new - v_old) / dtn - c2 * stencils.laplacian(
            0.5 * (x_new + x_old), stencil, detach_neighbours=not true_grad)

    return masked_mse_and_grad(residual, a, free)


class WaveProblem(Problem):
    op_name = "wave_loss_grad"
    channels = 1
    time_dependent = True
    twin = staticmethod(wave_twin)

    def __init__(self, mask, bc=None, *, x_old=None, v_old=None, c=1.0, dt=1.0,
                 stencil: int = 9, true_grad: bool = False):
        checks.check_field("mask", mask)
        checks.check_grid("mask", mask)
        n, dev = mask.shape[0], mask.device
        m = mask.contiguous()
        bc = checks.as_field("bc", bc, mask, 1)
        x_old = checks.as_field("x_old", x_old, mask, 1)
        v_old = checks.as_field("v_old", v_old, mask, 1)
        c = checks.batch_param("c", c, n, device=dev, nonnegative=True)
        dt = checks.batch_param("dt", dt, n, device=dev, positive=True)
        validate_scalar_inputs(bc, m, bc, {"x_old": x_old, "v_old": v_old}, stencil)
        super().__init__({"x_old": m * bc + (1 - m) * x_old, "v_old": (1 - m) * v_old, "mask": m,
                          "bc": bc, "c": c, "dt": dt})
        self.stencil = int(stencil)
        self.true_grad = bool(true_grad)

    def op_args(self):
        fl = self.fields
        return (fl["x_old"], fl["v_old"], fl["mask"], fl["bc"], fl["c"], fl["dt"], self.stencil, self.true_grad)

    def impose(self, u):
        return (1 - self.fields["mask"]) * u  # accelerations of Dirichlet cells are unused: keep them 0

    def initial_guess(self):
        return torch.zeros(self.shape, dtype=torch.float64, device=self.device)

    def set_boundary_values(self, bc):
        """New Dirichlet heights (e.g. emitters) for the coming step; imposed on x_old now."""
        bc = checks.as_field("bc", bc, self.fields["mask"], 1)
        m = self.fields["mask"]
        self.fields["bc"] = bc
        self.fields["x_old"] = m * bc + (1 - m) * self.fields["x_old"]

    def advance(self, u):
        fl = self.fields
        x_new, v_new = wave_state_update(u.detach(), fl["x_old"], fl["v_old"], fl["mask"], fl["bc"], fl["dt"])
        fl["x_old"], fl["v_old"] = x_new, v_new
        return self.initial_guess()

    @property
    def height(self):
        return self.fields["x_old"]
