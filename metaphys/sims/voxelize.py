"""Shapes in metres -> the fraction of each cell of a 3-D smoke grid they cover (emitters, obstacles).

Grid layout (``SmokeSim3D``): a node array [D, H, W] of cubes ``cell`` metres wide; node (k, i, j) is
the cube centred at world ``origin + cell * (j + 1/2, k + 1/2, H - 1 - i + 1/2)`` (x = column, y = depth,
z = up with row 0 at the top), the voxel layout of ``metaphys.io.vdb``. Coverage is measured on
``SUPERSAMPLE``^3 sub-cells per cell, so an emitter's volume (and the smoke it injects) hardly depends on
the resolution: spheres and boxes by their exact inside test at the sub-cell centres, meshes by trimesh's
voxelization at the sub-cell pitch (the filled interior counts whole, the surface shell half: on average
a shell voxel is half inside, so the volume comes out right instead of half a shell too large).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SUPERSAMPLE = 4


def _subcell_centres(shape, cell: float, origin, s: int):
    """World (x, y, z) of every sub-cell centre as three arrays [D*s, H*s, W*s] (broadcast views)."""
    d, h, w = shape
    sub = cell / s
    k = (np.arange(d * s) + 0.5) * sub + origin[1]
    i = (h * s - 1 - np.arange(h * s) + 0.5) * sub + origin[2]   # row 0 = top
    j = (np.arange(w * s) + 0.5) * sub + origin[0]
    return j[None, None, :], k[:, None, None], i[None, :, None]


def _pool(inside: np.ndarray, s: int) -> np.ndarray:
    d, h, w = (n // s for n in inside.shape)
    return inside.reshape(d, s, h, s, w, s).sum(axis=(1, 3, 5), dtype=np.float64) / float(s ** 3)


def _mesh_inside(shape, cell: float, origin, s: int, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Sub-cell occupancy [D*s, H*s, W*s] float32 of a closed triangle mesh (world metres) by trimesh: 1 in
    the filled interior, 1/2 on the surface shell."""
    import trimesh
    sub = cell / s
    d, h, w = shape
    # shift so sub-cell centres sit on integer multiples of the pitch (trimesh voxelizes on that lattice)
    shift = np.asarray(origin, np.float64) + 0.5 * sub
    mesh = trimesh.Trimesh(vertices=np.asarray(vertices, np.float64) - shift, faces=np.asarray(faces, np.int64),
                           process=False)
    out = np.zeros((d * s, h * s, w * s), np.float32)
    shell = mesh.voxelized(pitch=sub)
    for grid, value in ((shell.copy().fill(), 1.0), (shell, 0.5)):   # the shell overwrites its part of the fill
        if grid.filled_count == 0:
            continue
        x, y, z = np.rint(grid.points / sub).astype(np.int64).T       # (x, y, z) sub-cell indices
        keep = (x >= 0) & (x < w * s) & (y >= 0) & (y < d * s) & (z >= 0) & (z < h * s)
        out[y[keep], h * s - 1 - z[keep], x[keep]] = value
    return out


def coverage(shapes: Sequence[dict], shape, cell: float, origin=(0.0, 0.0, 0.0), s: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction [D, H, W] in [0, 1] of each cell covered by the union of ``shapes`` (validated spec shapes:
    ``sphere`` (center, radius), ``box`` (center, half_extents) or ``mesh`` (center, vertices relative to
    it, faces), metres, world axes)."""
    d, h, w = (int(n) for n in shape)
    origin = np.asarray(origin, np.float64)
    x, y, z = _subcell_centres((d, h, w), cell, origin, s)
    inside = np.zeros((d * s, h * s, w * s), np.float32)   # occupancy of each sub-cell
    for sh in shapes:
        c = np.asarray(sh["center"], np.float64)
        if sh["type"] == "sphere":
            np.maximum(inside, (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= float(sh["radius"]) ** 2,
                       out=inside)
        elif sh["type"] == "box":
            hx, hy, hz = (float(v) for v in sh["half_extents"])
            np.maximum(inside, (np.abs(x - c[0]) <= hx) & (np.abs(y - c[1]) <= hy) & (np.abs(z - c[2]) <= hz),
                       out=inside)
        elif sh["type"] == "mesh":
            v = np.load(sh["vertices"], allow_pickle=False) if isinstance(sh["vertices"], str) else sh["vertices"]
            f = np.load(sh["faces"], allow_pickle=False) if isinstance(sh["faces"], str) else sh["faces"]
            np.maximum(inside, _mesh_inside((d, h, w), cell, origin, s, np.asarray(v, np.float64) + c,
                                            np.asarray(f)), out=inside)
        else:
            raise ValueError(f"shape type must be 'sphere', 'box' or 'mesh', got {sh['type']!r}")
    return _pool(inside, s)
