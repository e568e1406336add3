"""Random 3-D problems for the 3-D Metamizer (issue #28): Laplace with random box obstacles and
Navier-Stokes in a cavity or a tunnel with an obstacle -- the 2-D generators' ideas one dimension up.

Signature as every generator, ``make(n, h, w, gen, device=None, depth=None)`` -> a batched problem on a
[depth, h, w] grid (``depth`` defaults to ``h``: ``make(n, 16, 16, gen)`` is a 16^3 problem). ``dims = 3``
on each function tells the training pools to ask for a volume.
"""
from __future__ import annotations

import math

import torch

from metaphys.physics.fluid3d import Fluid3DProblem, box_geometry
from metaphys.physics.laplace3d import Laplace3DProblem, frame_mask3d
from metaphys.problems.sampling import F64, log_uniform, uniform


def random_obstacle_mask3d(n: int, d: int, h: int, w: int, gen: torch.Generator, boxes: int = 3) -> torch.Tensor:
    """2-node frame + up to ``boxes`` random (possibly empty) boxes, each side up to a fifth of the grid."""
    m = frame_mask3d(n, d, h, w)
    dims = (d, h, w)
    for k in range(n):
        for _ in range(boxes):
            lo, ext = [], []
            for s in dims:
                margin = max(3, s // 10)
                lo.append(int(torch.randint(margin, max(margin + 1, s - margin), (1,), generator=gen)))
                ext.append(int(torch.randint(0, max(2, s // 5), (1,), generator=gen)))
            m[k, 0, lo[0]:lo[0] + ext[0], lo[1]:lo[1] + ext[1], lo[2]:lo[2] + ext[2]] = 1
    return m


def random_sine_values3d(n: int, d: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """b = sin(phi + k*(alpha*x + beta*y + gamma*z)), the 2-D boundary values (notes 8.1) in 3-D: the
    same spatial frequency per domain as the reference's 100x100 (k = 0.1 * 100 / size)."""
    phi = uniform(gen, n, 0.0, 2 * math.pi).view(n, 1, 1, 1, 1)
    coef = torch.randn(n, 3, generator=gen, dtype=F64)
    k = 0.1 * 100.0 / max(d, h, w)
    zz = torch.arange(d, dtype=F64).view(1, 1, d, 1, 1)
    yy = torch.arange(h, dtype=F64).view(1, 1, 1, h, 1)
    xx = torch.arange(w, dtype=F64).view(1, 1, 1, 1, w)
    a = coef.view(n, 3, 1, 1, 1)
    return torch.sin(phi + k * (a[:, 2:3] * xx + a[:, 1:2] * yy + a[:, 0:1] * zz))


def make_laplace3d(n, h, w, gen, device=None, depth=None, stencil: int = 27) -> Laplace3DProblem:
    """3-D Laplace: random obstacle boxes (Dirichlet) in a 2-node frame, sine boundary values."""
    d = h if depth is None else depth
    mask = random_obstacle_mask3d(n, d, h, w, gen)
    bc = random_sine_values3d(n, d, h, w, gen)
    return Laplace3DProblem(mask.to(device), bc.to(device), stencil=stencil)


def _tunnel(n: int, d: int, h: int, w: int, wall: int, speed: torch.Tensor):
    """No-slip walls on the z and y faces, inflow = outflow ``speed`` along x through the x-end walls."""
    mask = torch.ones(n, 1, d, h, w, dtype=F64)
    mask[..., wall:d - wall, wall:h - wall, :] = 0
    mask[..., :wall] = 1
    mask[..., w - wall:] = 1
    bc = torch.zeros(n, 3, d, h, w, dtype=F64)
    ends = torch.zeros(1, 1, d, h, w, dtype=F64)
    ends[..., wall:d - wall, wall:h - wall, :wall] = 1
    ends[..., wall:d - wall, wall:h - wall, w - wall:] = 1
    bc[:, 2:3] = ends * speed.view(n, 1, 1, 1, 1)
    return mask, bc


def make_fluid3d(n, h, w, gen, device=None, depth=None, max_speed: float = 1.0) -> Fluid3DProblem:
    """3-D Navier-Stokes: half the samples a lid-driven cavity (random lid velocity in the lid's
    plane), half a tunnel along x (inflow = outflow U ~ U[-max_speed, max_speed]); each with one
    obstacle (a sphere, a box, or none) near the centre; rho, mu, dt log-uniform per sample as in 2-D
    (``make_fluid``). Walls 3 nodes thick (``box_geometry``)."""
    d = h if depth is None else depth
    wall = 3
    masks, bcs = [], []
    for k in range(n):
        if float(torch.rand(1, generator=gen)) < 0.5:
            lid = (float(uniform(gen, 1, -max_speed, max_speed)), 0.0, float(uniform(gen, 1, -max_speed, max_speed)))
            mk, bk = box_geometry(1, d, h, w, wall=wall, lid=lid)
        else:
            mk, bk = _tunnel(1, d, h, w, wall, uniform(gen, 1, -max_speed, max_speed))
        kind = int(torch.randint(0, 3, (1,), generator=gen))
        centre = [s / 2 + float(uniform(gen, 1, -0.1 * s, 0.1 * s)) for s in (d, h, w)]
        zz, yy, xx = torch.meshgrid(*(torch.arange(s, dtype=F64) for s in (d, h, w)), indexing="ij")
        if kind == 0:
            r = float(uniform(gen, 1, 1.5, max(2.0, 0.15 * min(d, h, w))))
            inside = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= r * r
        elif kind == 1:
            half = [float(uniform(gen, 1, 1.0, max(1.5, 0.15 * s))) for s in (d, h, w)]
            inside = ((zz - centre[0]).abs() <= half[0]) & ((yy - centre[1]).abs() <= half[1]) \
                & ((xx - centre[2]).abs() <= half[2])
        else:
            inside = torch.zeros(d, h, w, dtype=torch.bool)
        inside = inside.view(1, 1, d, h, w)
        mk = torch.where(inside, torch.ones_like(mk), mk)
        bk = torch.where(inside, torch.zeros_like(bk), bk)
        masks.append(mk)
        bcs.append(bk)
    mask, bc = torch.cat(masks), torch.cat(bcs)
    rho = log_uniform(gen, n, 0.1, 10.0)
    mu = log_uniform(gen, n, 0.01, 10.0)
    dt = log_uniform(gen, n, 0.5, 4.0)
    return Fluid3DProblem(mask.to(device), bc.to(device), rho=rho.to(device), mu=mu.to(device), dt=dt.to(device))


make_laplace3d.dims = 3
make_fluid3d.dims = 3
