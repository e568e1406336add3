"""Laplace / Poisson: -Laplace(u) = f with hard Dirichlet cells.

Residual (the notes' sign convention): r = L(u~) + f with u~ = m*b + (1-m)*u and L the
isotropic 9-point Laplacian (5-point optional). Loss: per-sample mean of r^2 over free cells.
Gradient: the Appendix-D pseudo-gradient (neighbours detached: -2*w_c*(1-m)*r/N_free, i.e.
proportional to -r on free cells, 0 on Dirichlet cells) or, with ``true_grad``, the exact one.
"""
from __future__ import annotations

import torch

from metaphys.physics import checks, stencils
from metaphys.physics.base import Problem, masked_mse_and_grad


def laplace_twin(u, mask, bc, f, stencil: int, true_grad: bool):
    """PyTorch twin of the ``laplace_loss_grad`` kernel: (loss [N], grad [N,1,H,W])."""
    free = 1 - mask

    def residual(uu):
        ut = mask * bc + free * uu
        return stencils.laplacian(ut, stencil, detach_neighbours=not true_grad) + f

    return masked_mse_and_grad(residual, u, free)


def validate_scalar_inputs(u, mask, bc, extra: dict, stencil):
    """Shared checks for single-mask PDE ops: shapes, dtype, device, mask values, finiteness."""
    checks.check_field("u", u)
    n, c, h, w = u.shape
    checks.check_grid("u", u)
    checks.check_field("mask", mask, shape=(n, 1, h, w), device=u.device)
    checks.check_mask("mask", mask)
    checks.check_field("bc", bc, shape=(n, c, h, w), device=u.device)
    for name, t in extra.items():
        checks.check_finite(name, t)
    checks.check_finite("bc", bc)
    checks.check_stencil(stencil)


class LaplaceProblem(Problem):
    """Stationary Poisson problem, one channel. ``f`` is the source (0 gives Laplace)."""

    op_name = "laplace_loss_grad"
    channels = 1
    divergence_threshold = 2e5
    twin = staticmethod(laplace_twin)

    def __init__(self, mask, bc, f=None, *, stencil: int = 9, true_grad: bool = False):
        checks.check_field("mask", mask)
        checks.check_grid("mask", mask)
        n, _, h, w = mask.shape
        bc = checks.as_field("bc", bc, mask, 1)
        f = checks.as_field("f", f, mask, 1)
        validate_scalar_inputs(bc, mask.contiguous(), bc, {"f": f}, stencil)
        super().__init__({"mask": mask.contiguous(), "bc": bc, "f": f})
        self.stencil = int(stencil)
        self.true_grad = bool(true_grad)

    def op_args(self):
        fl = self.fields
        return (fl["mask"], fl["bc"], fl["f"], self.stencil, self.true_grad)


def frame_mask(n: int, h: int, w: int, width: int = 2, device=None) -> torch.Tensor:
    """[n,1,h,w] Dirichlet mask with a ``width``-cell frame (the notes' standard domain border)."""
    m = torch.zeros(n, 1, h, w, dtype=torch.float64, device=device)
    m[..., :width, :] = 1
    m[..., -width:, :] = 1
    m[..., :, :width] = 1
    m[..., :, -width:] = 1
    return m


def bilinear_laplace(h: int, w: int = None, device=None) -> LaplaceProblem:
    """Notes 9.1 (the eval case, the weights' self-test, the Laplace benchmark): 2-cell frame,
    b = (j/W)(i/H), f = 0; the exact discrete solution is b itself (a bilinear field is harmonic)."""
    w = w or h
    ii = torch.arange(h, dtype=torch.float64, device=device).view(1, 1, h, 1)
    jj = torch.arange(w, dtype=torch.float64, device=device).view(1, 1, 1, w)
    return LaplaceProblem(frame_mask(1, h, w, device=device), (jj / w) * (ii / h))
