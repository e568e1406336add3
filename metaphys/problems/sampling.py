"""Seeded random draws the problem generators share (notes section 8): uniform and log-uniform
parameters, obstacle masks and boundary values, all from a caller's torch.Generator."""
from __future__ import annotations

import math

import torch

from metaphys.physics import frame_mask

F64 = torch.float64


def uniform(gen, n, lo, hi, device=None):
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=F64).to(device)


def log_uniform(gen, n, lo, hi, device=None):
    return torch.exp(uniform(gen, n, math.log(lo), math.log(hi), device))


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
    phi = uniform(gen, n, 0.0, 2 * math.pi).view(n, 1, 1, 1)
    alpha = torch.randn(n, generator=gen, dtype=F64).view(n, 1, 1, 1)
    beta = torch.randn(n, generator=gen, dtype=F64).view(n, 1, 1, 1)
    k = 0.1 * 100.0 / max(h, w)  # same spatial pattern per domain as the reference's 100x100
    ii = torch.arange(h, dtype=F64).view(1, 1, h, 1)
    jj = torch.arange(w, dtype=F64).view(1, 1, 1, w)
    return torch.sin(phi + k * (alpha * jj + beta * ii)).to(device)
