"""Finite-difference stencils on [N, C, H, W] float64 fields (the PyTorch twin's building blocks).

Row index i is "y" and grows downwards, column index j is "x". Grid spacing is one cell.
Out-of-range neighbours are 0 (zero "same" padding) unless ``periodic`` is set (circular).
Every function is differentiable with autograd; ``detach_neighbours`` gives the paper's
Appendix-D Laplacian whose neighbour part is a constant (stop-gradient), so its gradient
w.r.t. the centre cell is the centre weight only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Centre weights of the two Laplacians (the derivative of the detached Laplacian w.r.t. u_ij).
CENTRE_WEIGHT = {9: -3.0, 5: -4.0}


def padded(x: torch.Tensor, periodic: bool = False) -> torch.Tensor:
    """One-cell halo around the last two dimensions: zeros, or wrap-around when periodic."""
    if periodic:
        return F.pad(x, (1, 1, 1, 1), mode="circular")
    return F.pad(x, (1, 1, 1, 1))


def neighbour(xp: torch.Tensor, di: int, dj: int) -> torch.Tensor:
    """x[i+di, j+dj] read from a one-cell padded tensor ``xp``."""
    h, w = xp.shape[-2] - 2, xp.shape[-1] - 2
    return xp[..., 1 + di : 1 + di + h, 1 + dj : 1 + dj + w]


def laplacian(x: torch.Tensor, stencil: int = 9, periodic: bool = False,
              detach_neighbours: bool = False) -> torch.Tensor:
    """Isotropic 9-point Laplacian 1/4*[[1,2,1],[2,-12,2],[1,2,1]] (default) or the 5-point one."""
    if stencil not in CENTRE_WEIGHT:
        raise ValueError(f"stencil must be 9 or 5, got {stencil!r}")
    src = x.detach() if detach_neighbours else x
    xp = padded(src, periodic)
    axis = neighbour(xp, -1, 0) + neighbour(xp, 1, 0) + neighbour(xp, 0, -1) + neighbour(xp, 0, 1)
    if stencil == 9:
        diag = neighbour(xp, -1, -1) + neighbour(xp, -1, 1) + neighbour(xp, 1, -1) + neighbour(xp, 1, 1)
        around = 0.25 * diag + 0.5 * axis
    else:
        around = axis
    return around + CENTRE_WEIGHT[stencil] * x


def dx_c(x: torch.Tensor, periodic: bool = False) -> torch.Tensor:
    """Central difference along columns: (x[i,j+1] - x[i,j-1]) / 2."""
    xp = padded(x, periodic)
    return 0.5 * (neighbour(xp, 0, 1) - neighbour(xp, 0, -1))


def dy_c(x: torch.Tensor, periodic: bool = False) -> torch.Tensor:
    """Central difference along rows: (x[i+1,j] - x[i-1,j]) / 2."""
    xp = padded(x, periodic)
    return 0.5 * (neighbour(xp, 1, 0) - neighbour(xp, -1, 0))


def dx_p(x: torch.Tensor) -> torch.Tensor:
    """Forward difference along columns: x[i,j+1] - x[i,j]."""
    return neighbour(padded(x), 0, 1) - x


def dx_m(x: torch.Tensor) -> torch.Tensor:
    """Backward difference along columns: x[i,j] - x[i,j-1]."""
    return x - neighbour(padded(x), 0, -1)


def dy_p(x: torch.Tensor) -> torch.Tensor:
    """Forward difference along rows: x[i+1,j] - x[i,j]."""
    return neighbour(padded(x), 1, 0) - x


def dy_m(x: torch.Tensor) -> torch.Tensor:
    """Backward difference along rows: x[i,j] - x[i-1,j]."""
    return x - neighbour(padded(x), -1, 0)
