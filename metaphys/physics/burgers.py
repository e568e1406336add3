"""2D coupled Burgers, backward Euler with periodic stencils; unknown v = (u, v) (channel 0 = x).

r_u = (u - u_old)/dt + u*Dx_c(u) + v*Dy_c(u) - mu*L(u), same for v; all at the new level with
Dirichlet cells imposed. The pseudo-gradient detaches only the Laplacian's neighbours (advection
keeps its gradient, notes section 8.5); ``true_grad`` detaches nothing. mu, dt: tensors [N].
"""
from __future__ import annotations

import torch

from metaphys.physics import checks, stencils
from metaphys.physics.base import Problem, masked_mse_and_grad
from metaphys.physics.laplace import validate_scalar_inputs


def burgers_residual_fn(v_old, mask, bc, mu, dt, stencil: int, true_grad: bool):
    """r(v) [N,2,H,W] on every cell (the loss masks out the Dirichlet ones)."""
    free = 1 - mask
    mun, dtn = mu.view(-1, 1, 1, 1), dt.view(-1, 1, 1, 1)

    def residual(vv):
        vt = mask * bc + free * vv
        ux, uy = vt[:, 0:1], vt[:, 1:2]
        adv = ux * stencils.dx_c(vt, periodic=True) + uy * stencils.dy_c(vt, periodic=True)
        lap = stencils.laplacian(vt, stencil, periodic=True, detach_neighbours=not true_grad)
        return (vt - v_old) / dtn + adv - mun * lap

    return residual


def burgers_twin(v, v_old, mask, bc, mu, dt, stencil: int, true_grad: bool):
    """PyTorch twin of the ``burgers_loss_grad`` kernel: (loss [N], grad [N,2,H,W])."""
    return masked_mse_and_grad(burgers_residual_fn(v_old, mask, bc, mu, dt, stencil, true_grad), v, 1 - mask)


class BurgersProblem(Problem):
    op_name = "burgers_loss_grad"
    channels = 2
    time_dependent = True
    divergence_threshold = 1e5
    twin = staticmethod(burgers_twin)

    def __init__(self, mask, bc=None, *, v_old=None, mu=0.3, dt=1.0, stencil: int = 9,
                 true_grad: bool = False):
        checks.check_field("mask", mask)
        checks.check_grid("mask", mask)
        n, dev = mask.shape[0], mask.device
        m = mask.contiguous()
        bc = checks.as_field("bc", bc, mask, 2)
        v_old = checks.as_field("v_old", v_old, mask, 2)
        mu = checks.batch_param("mu", mu, n, device=dev, nonnegative=True)
        dt = checks.batch_param("dt", dt, n, device=dev, positive=True)
        validate_scalar_inputs(bc, m, bc, {"v_old": v_old}, stencil)
        super().__init__({"v_old": m * bc + (1 - m) * v_old, "mask": m, "bc": bc, "mu": mu, "dt": dt})
        self.stencil = int(stencil)
        self.true_grad = bool(true_grad)

    def op_args(self):
        fl = self.fields
        return (fl["v_old"], fl["mask"], fl["bc"], fl["mu"], fl["dt"], self.stencil, self.true_grad)

    def initial_guess(self):
        return self.impose(self.fields["v_old"].clone())

    # --- what the residual Newton (metaphys.optim.newton_residual) needs -----------------------
    # a residual couples a cell to its 8 neighbours (9-point Laplacian, central differences)
    jacobian_offsets = tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0))

    def residual_field(self, v: torch.Tensor) -> torch.Tensor:
        """r(v) [N,2,H,W] with the true Jacobian (no stop-gradients), 0 on Dirichlet cells."""
        fl = self.fields
        fn = burgers_residual_fn(fl["v_old"], fl["mask"], fl["bc"], fl["mu"], fl["dt"], self.stencil, True)
        return (1 - fl["mask"]) * fn(v)

    def jacobian_stencil_problem(self):
        """Why the non-wrapping Jacobian coloring would be wrong here, or None: with periodic
        stencils it is exact only where the outer ring of cells is Dirichlet (the notes' frame is)."""
        m = self.fields["mask"][:, 0]
        ring = torch.cat([m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1]], dim=1)
        if not bool((ring == 1).all()):
            return ("the residual Newton for Burgers needs the outer ring of cells to be Dirichlet "
                    "(mask = 1 there): its periodic stencils couple across the wrap")
        return None

    def advance(self, u):
        u = self.impose(u.detach())
        self.fields["v_old"] = u.clone()
        return u
