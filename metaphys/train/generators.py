"""Seeded random problem generators shared by the training pools and the evaluation harness.

Each generator is ``make(n, h, w, gen, device) -> Problem`` (a batched problem of n fresh
samples) with an optional ``on_advance(problem, t)`` hook for time-dependent scenery. The
randomization follows the notes (section 8) with positions scaled to the grid size.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from metaphys.physics import DiffusionProblem, LaplaceProblem, frame_mask

F64 = torch.float64


def _uniform(gen, n, lo, hi, device=None):
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=F64).to(device)


def _log_uniform(gen, n, lo, hi, device=None):
    return torch.exp(_uniform(gen, n, math.log(lo), math.log(hi), device))


def random_obstacle_mask(n: int, h: int, w: int, gen: torch.Generator, rectangles: int = 3,
                         device=None) -> torch.Tensor:
    """2-cell frame + up to ``rectangles`` random (possibly empty) rectangles (notes 8.1)."""
    m = frame_mask(n, h, w)
    margin_y, margin_x = max(3, h // 10), max(3, w // 10)
    max_h, max_w = max(2, h // 5), max(2, w // 5)
    for k in range(n):
        for _ in range(rectangles):
            y0 = int(torch.randint(margin_y, max(margin_y + 1, h - margin_y), (1,), generator=gen))
            x0 = int(torch.randint(margin_x, max(margin_x + 1, w - margin_x), (1,), generator=gen))
            hh = int(torch.randint(0, max_h, (1,), generator=gen))
            ww = int(torch.randint(0, max_w, (1,), generator=gen))
            m[k, 0, y0:y0 + hh, x0:x0 + ww] = 1
    return m.to(device)


def random_sine_values(n: int, h: int, w: int, gen: torch.Generator, device=None) -> torch.Tensor:
    """b(i,j) = sin(phi + 0.1*(alpha*j + beta*i)) * 100/size-scaled frequency (notes 8.1)."""
    phi = _uniform(gen, n, 0.0, 2 * math.pi).view(n, 1, 1, 1)
    alpha = torch.randn(n, generator=gen, dtype=F64).view(n, 1, 1, 1)
    beta = torch.randn(n, generator=gen, dtype=F64).view(n, 1, 1, 1)
    k = 0.1 * 100.0 / max(h, w)  # same spatial pattern per domain as the reference's 100x100
    ii = torch.arange(h, dtype=F64).view(1, 1, h, 1)
    jj = torch.arange(w, dtype=F64).view(1, 1, 1, w)
    return torch.sin(phi + k * (alpha * jj + beta * ii)).to(device)


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
    D = _log_uniform(gen, n, 0.05, 0.5)
    vel = 5.0 * torch.randn(n, 2, 1, 1, generator=gen, dtype=F64)
    vel = vel.expand(n, 2, h, w).contiguous()
    return DiffusionProblem(mask.to(device), bc, c_old=None, velocity=vel.to(device), D=D.to(device), dt=1.0,
                            stencil=stencil)


GENERATORS: Dict[str, Callable] = {"laplace": make_laplace, "diffusion": make_diffusion,
                                   "diffusion_low": make_diffusion_low}


def register(name: str, make: Callable) -> None:
    GENERATORS[name] = make


def get(name: str) -> Callable:
    _ensure_optional()
    if name not in GENERATORS:
        raise ValueError(f"unknown problem generator {name!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[name]


def _ensure_optional():
    """Fluid and cloth generators live beside their physics; import them lazily."""
    try:
        from metaphys.train import generators_fluid_cloth  # noqa: F401
    except ImportError:
        pass
