"""Cloth collider kinds, listed once (issue #26 item 1): each kind's code, parameters, spec entry and
signed distance. Everything that handles colliders reads this list: the bake spec's collider
variants (spec/schema.py), ClothSim's table (sims/cloth.py), the PyTorch twins and the Python-side
terms (physics/cloth.py, physics/cloth_hessian.py) and, through the kind codes and columns below,
the C++/CUDA kernels (csrc/cloth/cloth_math.h: ``collider_distance``, one switch over the codes).

**The table.** A problem's colliders are one float64 tensor [N, K, WIDTH], a row per collider
(``ClothProblem.fields["colliders"]``, in model units), new every step for moving colliders:

    column  0      kind code (KINDS; 0 = an unused padding row)
            1..9   rotation R, row-major 3x3, the collider's local -> world (identity: axis-aligned)
            10..12 centre (translation)
            13..16 parameters (the kind's own, in the order of ``Kind.params``; the rest 0)
            17     friction (Coulomb coefficient; lagged, see physics/cloth.py)

A vertex at x is seen in the collider's frame as p = R^T (x - centre); the contact penalty is
k_contact * max(0, margin - d(p))^3 with the kind's signed distance d.

**Kinds.** ``sphere`` (radius), ``box`` (half extents; rotated or not: one kind), both in the
kernels; ``mesh`` (a triangle mesh, sims/mesh_collider.py): its row carries the code and friction,
and its distance is the lagged contact plane each cloth vertex gets per step (a per-vertex field,
``planes``: Python terms), so the kernel's switch has no case for it.

**Adding a kind** = one ``Kind`` entry here (code, parameter names, its signed distance in the
collider's frame as a PyTorch function: the twin differentiates it for gradients, Hessians and the
PSD correction) plus one ``case`` of ``collider_distance`` in csrc/cloth/cloth_math.h (distance,
gradient, Hessian). The spec, the sim, the friction, the warm-start projection and the Newton
terms then take it as they are; the Blender add-on writes the spec's ``type`` (its shape list is
checked against KINDS by tests/test_single_sources.py).

This module imports neither torch nor the rest of the package (the spec validates without torch);
the distance functions import torch when they run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

# columns of a table row (csrc/cloth/cloth_math.h: ColliderColumn)
KIND, ROTATION, CENTER, PARAMS, FRICTION = 0, slice(1, 10), slice(10, 13), slice(13, 17), 17
N_PARAMS = 4
WIDTH = 18
NONE = 0   # the padding row's code


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: its spec key (metres, inflated by the collider's thickness) and size."""
    name: str
    size: int = 1          # 1: a number > 0; 3: a vector of numbers > 0
    doc: str = ""          # the vector's entries for the spec, e.g. "[hx, hy, hz]"


def _sphere_distance(p, prm):
    """|p| - radius (p [..., 3] in the sphere's frame, prm [..., 4])."""
    import torch
    s2 = (p * p).sum(-1)
    pos = s2 > 0   # |p| through a guarded sqrt: every derivative finite at the centre
    return torch.where(pos, torch.sqrt(torch.where(pos, s2, torch.ones_like(s2))), torch.zeros_like(s2)) - prm[..., 0]


def _box_distance(p, prm):
    """Exact box distance, half extents prm[..., :3] (sharp edges and corners)."""
    import torch
    q = p.abs() - prm[..., :3]
    o = q.clamp_min(0.0)
    on2 = (o * o).sum(-1)
    out = on2 > 0
    outside = torch.where(out, torch.sqrt(torch.where(out, on2, torch.ones_like(on2))), torch.zeros_like(on2))
    return outside + q.amax(-1).clamp_max(0.0)


def _sphere_distance_hessian(p, prm):
    """Hess(|p|) = (I - p^ p^T) / |p| [..., 3, 3] (0 at the centre)."""
    import torch
    r = p.norm(dim=-1)
    u = p / r.clamp_min(1e-300)[..., None]
    eye = torch.eye(3, dtype=p.dtype, device=p.device)
    H = (eye - u[..., :, None] * u[..., None, :]) / r.clamp_min(1e-300)[..., None, None]
    return torch.where((r > 0)[..., None, None], H, torch.zeros_like(H))


def _box_distance_hessian(p, prm):
    """The box distance's Hessian [..., 3, 3]: outside an edge or a corner (o = max(|p| - h, 0) with
    |o| > 0) (P - g g^T) / |o|, P the projector on the axes where |p| > h and g = sign(p) o / |o|;
    0 on the faces' regions and inside."""
    import torch
    q = p.abs() - prm[..., :3]
    o = q.clamp_min(0.0)
    on = o.norm(dim=-1)
    g = torch.sign(p) * o / on.clamp_min(1e-300)[..., None]
    P = torch.diag_embed((q > 0).to(p.dtype))
    H = (P - g[..., :, None] * g[..., None, :]) / on.clamp_min(1e-300)[..., None, None]
    return torch.where((on > 0)[..., None, None], H, torch.zeros_like(H))


@dataclass(frozen=True)
class Kind:
    """A collider kind: ``name`` (the spec's ``type``), ``code`` (column KIND), ``params`` (columns
    PARAMS), ``distance(p, prm)`` (PyTorch, p in the collider's frame; None: not a table distance,
    see ``kernel``), ``kernel`` (the compiled kernels have its case), ``rotation`` (the spec takes
    a ``rotation`` track), ``example`` (the spec's one-line description)."""
    name: str
    code: int
    params: Tuple[Param, ...]
    distance: Optional[Callable]
    kernel: bool
    rotation: bool
    example: str
    rotation_doc: str = ""
    # optional: the distance's Hessian in closed form [..., 3, 3] (the PSD correction's contact
    # curvature; without it autograd of ``distance`` gives it, ~5x slower: 6 ms per Newton iteration
    # on the 32^2 drape)
    distance_hessian: Optional[Callable] = None


KINDS: Tuple[Kind, ...] = (
    Kind("sphere", 1, (Param("radius"),), _sphere_distance, kernel=True, rotation=False,
         example='`{"type": "sphere", "center": [x,y,z] or per-frame list, "radius": r}`',
         distance_hessian=_sphere_distance_hessian),
    Kind("box", 2, (Param("half_extents", 3, "[hx, hy, hz]"),), _box_distance, kernel=True, rotation=True,
         example='`{"type": "box", "center": ..., "half_extents": [hx,hy,hz], "rotation": [rx,ry,rz] degrees '
                 '(optional)}`',
         rotation_doc="XYZ Euler angles in degrees as Blender's (R = Rz Ry Rx), or a per-frame list of them; "
                      "absent = axis-aligned",
         distance_hessian=_box_distance_hessian),
    Kind("mesh", 3, (), None, kernel=False, rotation=True,
         example='`{"type": "mesh", "center": ..., "vertices": ..., "faces": ...}` (a triangle mesh, static, rigid '
                 'or deforming)',
         rotation_doc="XYZ Euler angles in degrees (rigid motion), or per frame"),
)
BY_NAME: Dict[str, Kind] = {k.name: k for k in KINDS}
BY_CODE: Dict[int, Kind] = {k.code: k for k in KINDS}
KERNEL_KINDS: Tuple[Kind, ...] = tuple(k for k in KINDS if k.kernel)
assert len(BY_CODE) == len(KINDS) and NONE not in BY_CODE and all(
    sum(p.size for p in k.params) <= N_PARAMS for k in KINDS)


def row(kind: str, center, params=(), rotation=None, friction: float = 0.0) -> np.ndarray:
    """One table row [WIDTH] (numpy): ``params`` flat in the kind's order, ``rotation`` a 3x3
    local -> world matrix (None: identity)."""
    k = BY_NAME[kind]
    out = np.zeros(WIDTH)
    out[KIND] = k.code
    out[ROTATION] = (np.eye(3) if rotation is None else np.asarray(rotation, np.float64)).reshape(9)
    out[CENTER] = np.asarray(center, np.float64).reshape(3)
    flat = np.asarray(params, np.float64).reshape(-1)
    out[PARAMS.start:PARAMS.start + flat.size] = flat
    out[FRICTION] = friction
    return out


def from_lists(spheres=None, boxes=None, obbs=None, xp=np):
    """A table [N, K, WIDTH] from the old per-kind lists (same leading N, any may be None):
    spheres [N,S,4] (centre, r), axis boxes [N,B,6] (centre, half extents), oriented boxes
    [N,O,15] (centre, half extents, row-major rotation). Entries with r == 0 / all half extents 0
    (their padding) become padding rows. ``xp``: numpy, or torch for tensors. Returns one table
    per non-empty list (concatenate them along dim 1)."""
    parts = []
    for lst, kind, width in ((spheres, "sphere", 4), (boxes, "box", 6), (obbs, "box", 15)):
        if lst is None or lst.shape[1] == 0:
            continue
        n, m = lst.shape[:2]
        t = xp.zeros((n, m, WIDTH), dtype=lst.dtype) if xp is np else \
            xp.zeros((n, m, WIDTH), dtype=lst.dtype, device=lst.device)
        extent = lst[..., 3:4] if kind == "sphere" else lst[..., 3:6]
        active = (extent > 0).any(-1)
        t[..., KIND] = xp.where(active, BY_NAME[kind].code, NONE)
        t[..., CENTER] = lst[..., 0:3]
        t[..., PARAMS.start:PARAMS.start + extent.shape[-1]] = extent
        if width == 15:
            t[..., ROTATION] = lst[..., 6:15]
        else:
            t[..., ROTATION] = (xp.eye(3, dtype=lst.dtype) if xp is np else
                                xp.eye(3, dtype=lst.dtype, device=lst.device)).reshape(9)
        parts.append(t)
    return parts
