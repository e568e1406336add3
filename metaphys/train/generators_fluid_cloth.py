"""Random Navier-Stokes (and cloth, when available) training problems (notes sections 8.4, 8.6),
scaled from the reference's 100x100 to any grid size."""
from __future__ import annotations

import math

import torch

from metaphys.physics.fluid import FluidProblem, add_obstacle, fluid_geometry
from metaphys.train.generators import _log_uniform, _uniform, register

F64 = torch.float64


def make_fluid(n, h, w, gen, device=None, max_speed: float = 2.0):
    """Wind tunnel with walls, inflow = outflow U ~ U[-max_speed, max_speed] and one obstacle
    (rotating cylinder, box, or none); rho, mu, dt log-uniform per sample."""
    s = min(h, w) / 100.0
    speed = max_speed * (2 * torch.rand(n, generator=gen, dtype=F64) - 1)
    mask, bc = fluid_geometry(n, h, w, kind="tunnel", inflow=speed, wall_rows=max(2, round(3 * s)),
                              wall_cols=max(2, round(5 * s)), inflow_margin=max(3, round(10 * s)))
    masks, bcs = [], []
    for k in range(n):
        mk, bk = mask[k:k + 1], bc[k:k + 1]
        kind = int(torch.randint(0, 3, (1,), generator=gen))
        cy = h / 2 + float(_uniform(gen, 1, -0.1 * h, 0.1 * h))
        cx = w / 2 + float(_uniform(gen, 1, -0.1 * w, 0.1 * w))
        if kind == 0:
            r = float(_uniform(gen, 1, max(1.5, 5 * s), max(2.0, 19 * s)))
            omega = float(max_speed * (2 * torch.rand(1, generator=gen, dtype=F64) - 1)) / r
            mk, bk = add_obstacle(mk, bk, "circle", center=(cy, cx), radius=r, omega=omega)
        elif kind == 1:
            hh = float(_uniform(gen, 1, max(1.0, 5 * s), max(1.5, 19 * s)))
            hw = float(_uniform(gen, 1, max(1.0, 5 * s), max(1.5, 19 * s)))
            mk, bk = add_obstacle(mk, bk, "box", center=(cy, cx), half=(hh, hw))
        masks.append(mk)
        bcs.append(bk)
    mask, bc = torch.cat(masks), torch.cat(bcs)
    rho = _log_uniform(gen, n, 0.1, 10.0)
    mu = _log_uniform(gen, n, 0.01, 10.0)
    dt = _log_uniform(gen, n, 0.5, 4.0)
    return FluidProblem(mask.to(device), bc.to(device), rho=rho.to(device), mu=mu.to(device), dt=dt.to(device))


register("fluid", make_fluid)

try:  # cloth lands separately; register it when its physics module exists
    from metaphys.physics import cloth as _cloth  # noqa: F401
except ImportError:  # pragma: no cover
    _cloth = None
