"""Advection-diffusion, backward Euler: dc/dt = D*Lap(c) - div(v c) + R.

r = (c~ - c_old)/dt - D*L(c~) + [v_x*Dx_c(c~) + v_y*Dy_c(c~)] + (Dx_c v_x + Dy_c v_y)*c~ - R
with c~ the BC-imposed unknown. The bracket (v.grad c) and the Laplacian's neighbours are
detached in the pseudo-gradient (notes section 8.2); ``true_grad`` keeps everything.
Velocity channels: 0 = v_y (rows), 1 = v_x (columns). D, dt: per-sample tensors [N].
"""
from __future__ import annotations

import copy

import torch

from metaphys.physics import checks, stencils
from metaphys.physics.base import Problem, masked_mse_and_grad
from metaphys.physics.laplace import validate_scalar_inputs


def diffusion_residual_fn(c_old, mask, bc, vel, source, D, dt, stencil: int, true_grad: bool):
    """The residual r(c) [N,1,H,W] as a function (the one place the discretisation is written)."""
    free = 1 - mask
    vy, vx = vel[:, 0:1], vel[:, 1:2]
    div_v = stencils.dx_c(vx) + stencils.dy_c(vy)
    Dn, dtn = D.view(-1, 1, 1, 1), dt.view(-1, 1, 1, 1)

    def residual(cc):
        ct = mask * bc + free * cc
        cs = ct if true_grad else ct.detach()
        return ((ct - c_old) / dtn
                - Dn * stencils.laplacian(ct, stencil, detach_neighbours=not true_grad)
                + vx * stencils.dx_c(cs) + vy * stencils.dy_c(cs)
                + div_v * ct - source)

    return residual


def diffusion_twin(c, c_old, mask, bc, vel, source, D, dt, stencil: int, true_grad: bool):
    """PyTorch twin of the ``diffusion_loss_grad`` kernel: (loss [N], grad [N,1,H,W])."""
    residual = diffusion_residual_fn(c_old, mask, bc, vel, source, D, dt, stencil, true_grad)
    return masked_mse_and_grad(residual, c, 1 - mask)


class DiffusionProblem(Problem):
    """One implicit time step of advection-diffusion for a passive scalar c (one channel)."""

    op_name = "diffusion_loss_grad"
    channels = 1
    time_dependent = True
    # advection makes the operator far from symmetric: the subspace acceleration minimizes the
    # gradient (~residual) norm, GMRES-like (optim/accelerate.py; D=0.1: 1.7e-9 -> 8e-11)
    subspace_model = "gradient"
    divergence_threshold = 1e5
    twin = staticmethod(diffusion_twin)

    def __init__(self, mask, bc=None, *, c_old=None, velocity=None, source=None, D=1.0, dt=1.0,
                 stencil: int = 9, true_grad: bool = False):
        checks.check_field("mask", mask)
        checks.check_grid("mask", mask)
        n = mask.shape[0]
        dev = mask.device
        bc = checks.as_field("bc", bc, mask, 1)
        c_old = checks.as_field("c_old", c_old, mask, 1)
        velocity = checks.as_field("velocity", velocity, mask, 2)
        source = checks.as_field("source", source, mask, 1)
        D = checks.batch_param("D", D, n, device=dev, nonnegative=True)
        dt = checks.batch_param("dt", dt, n, device=dev, positive=True)
        validate_scalar_inputs(bc, mask.contiguous(), bc,
                               {"c_old": c_old, "velocity": velocity, "source": source}, stencil)
        m = mask.contiguous()
        super().__init__({"c_old": m * bc + (1 - m) * c_old, "mask": m, "bc": bc, "velocity": velocity,
                          "source": source, "D": D, "dt": dt})
        self.stencil = int(stencil)
        self.true_grad = bool(true_grad)

    def op_args(self):
        fl = self.fields
        return (fl["c_old"], fl["mask"], fl["bc"], fl["velocity"], fl["source"], fl["D"], fl["dt"],
                self.stencil, self.true_grad)

    def initial_guess(self):
        return self.impose(self.fields["c_old"].clone())

    def advance(self, u):
        """c_old <- c_new; the solution is kept as the warm start of the next step."""
        u = self.impose(u.detach())
        self.fields["c_old"] = u.clone()
        return u

    # --- linear-solver hooks (metaphys.optim.krylov) -------------------------------------------
    def residual_field(self, u: torch.Tensor) -> torch.Tensor:
        """The residual field r(u) [N,1,H,W], 0 on Dirichlet cells (r is affine in u: the
        Krylov solvers take matrix-vector products as r(v) - r(0))."""
        fl = self.fields
        fn = diffusion_residual_fn(fl["c_old"], fl["mask"], fl["bc"], fl["velocity"], fl["source"], fl["D"],
                                   fl["dt"], self.stencil, true_grad=True)
        return (1 - fl["mask"]) * fn(u)

    def with_rhs(self, rhs: torch.Tensor) -> "DiffusionProblem":
        """The same operator A with zero Dirichlet values, c_old = 0 and source ``rhs``: its
        residual is A z - rhs (the correction problem a learned preconditioner is run on)."""
        out = copy.copy(self)
        zero = torch.zeros_like(self.fields["c_old"])
        out.fields = dict(self.fields, c_old=zero, bc=zero, source=rhs)
        return out
