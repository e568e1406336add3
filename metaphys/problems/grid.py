"""Random Laplace and advection-diffusion problems (notes section 8.1), scaled to any grid size."""
from __future__ import annotations

import torch

from metaphys.physics import DiffusionProblem, LaplaceProblem
from metaphys.problems.sampling import F64, log_uniform, random_obstacle_mask, random_sine_values


def make_laplace(n, h, w, gen, device=None, stencil: int = 9) -> LaplaceProblem:
    mask = random_obstacle_mask(n, h, w, gen, device=device)
    bc = random_sine_values(n, h, w, gen, device=device)
    return LaplaceProblem(mask, bc, stencil=stencil)


def make_diffusion(n, h, w, gen, device=None, stencil: int = 9) -> DiffusionProblem:
    """Random obstacles/boundary values; D = 1 (p 0.9) or 0; constant velocity ~ N(0, 5^2)."""
    mask = random_obstacle_mask(n, h, w, gen, device=device)
    bc = random_sine_values(n, h, w, gen, device=device)
    D = torch.where(torch.rand(n, generator=gen, dtype=F64) < 0.9, 1.0, 0.0).to(F64)
    vel = 5.0 * torch.randn(n, 2, 1, 1, generator=gen, dtype=F64)
    vel = vel.expand(n, 2, h, w).contiguous()
    return DiffusionProblem(mask.to(device), bc, c_old=None, velocity=vel.to(device), D=D.to(device), dt=1.0,
                            stencil=stencil)


def make_diffusion_low(n, h, w, gen, device=None, stencil: int = 9) -> DiffusionProblem:
    """Advection-dominated diffusion: D log-uniform in [0.05, 0.5] (the product's smoke density
    and the held-out D = 0.1 case live here; the reference trains only D in {0, 1})."""
    mask = random_obstacle_mask(n, h, w, gen, device=device)
    bc = random_sine_values(n, h, w, gen, device=device)
    D = log_uniform(gen, n, 0.05, 0.5)
    vel = 5.0 * torch.randn(n, 2, 1, 1, generator=gen, dtype=F64)
    vel = vel.expand(n, 2, h, w).contiguous()
    return DiffusionProblem(mask.to(device), bc, c_old=None, velocity=vel.to(device), D=D.to(device), dt=1.0,
                            stencil=stencil)
