"""Seeded random problem generators, shared by the training pools and the evaluation (below both).

Each generator is ``make(n, h, w, gen, device) -> Problem`` (a batched problem of n fresh samples)
with an optional ``on_advance(problem, t, gen)`` hook for time-dependent scenery; 3-D generators
(``grid3d.py``, attribute ``dims = 3``) take ``depth=`` too and make [N, C, depth, h, w] problems. The randomization
follows the notes (section 8) with positions scaled to the grid size. ``GENERATORS`` is the one
table of them, by the name a training config's pool uses.
"""
from __future__ import annotations

from typing import Callable, Dict

from metaphys.problems.fluid_cloth import make_cloth, make_cloth_product, make_fluid
from metaphys.problems.grid import make_diffusion, make_diffusion_low, make_laplace
from metaphys.problems.grid3d import make_fluid3d, make_laplace3d

GENERATORS: Dict[str, Callable] = {"laplace": make_laplace, "diffusion": make_diffusion,
                                   "diffusion_low": make_diffusion_low, "fluid": make_fluid, "cloth": make_cloth,
                                   "cloth_product": make_cloth_product, "laplace3d": make_laplace3d,
                                   "fluid3d": make_fluid3d}


def dims_of(make: Callable) -> int:
    """Spatial dims of the problems a generator makes (2, or 3 for the ``grid3d`` generators)."""
    return int(getattr(make, "dims", 2))


def get(name: str) -> Callable:
    if name not in GENERATORS:
        raise ValueError(f"unknown problem generator {name!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[name]
