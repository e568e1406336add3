"""OpenVDB ``.vdb`` volumes (a float grid named ``density``, optionally a vec3 grid ``velocity``)
for Blender's Volume objects, Houdini, Embergen and Unreal.

The files are written and read by ``metaphys.io.vdbfile`` (numpy and zlib only): PyPI has no
OpenVDB binding for CPython 3.11 on Linux, so the format is written directly, as OpenVDB itself
writes it. VDB output therefore needs nothing beyond requirements.txt; ``vdb_available()`` is
always True and stays for callers that asked before writing.

Index convention
----------------
``density`` is ``[D, H, W]`` (or ``[H, W]``, which becomes one voxel thick, D = 1): a stack of D
images, each indexed like the PNGs of ``metaphys.io.images`` (row 0 at the top, ``row0='top'``).
In Blender's world (+Z up) column j goes to +X, slice k to +Y (away from a front view), and row
i to Z, row 0 highest; so a 2-D frame shows in Blender's front view (-Y looking +Y) as it does in
its PNG. With ``row0='bottom'`` row 0 is the lowest Z. VDB voxel ``(x, y, z) = (j, k, H-1-i)``
(``row0='top'``) or ``(j, k, i)`` (``row0='bottom'``).

``origin`` is the world position of the domain's min corner (the outer corner of voxel
(0, 0, 0)); the domain spans ``origin + voxel_size * (W, D, H)``. OpenVDB places voxel centers
at its index coordinates, so the grid transform translates by ``origin + voxel_size / 2``.
"""
from __future__ import annotations

import os

import numpy as np

from . import vdbfile
from .atomic import PathLike, atomic_open

__all__ = ["vdb_available", "write_density_vdb", "read_vdb_grid", "read_vdb_velocity", "grid_names",
           "has_velocity", "index_to_world"]


def vdb_available() -> bool:
    """True: metaphys writes .vdb files itself (``metaphys.io.vdbfile``), no OpenVDB module needed."""
    return True


def _as_volume(density) -> np.ndarray:
    a = np.asarray(density)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or 0 in a.shape:
        raise ValueError(f"density must be a non-empty [D, H, W] or [H, W] array, got shape {np.shape(density)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"density must be real numeric, got dtype {a.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        a = a.astype(np.float32)
    if not np.isfinite(a).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ValueError(f"density has a non-finite value (after casting to float32) at [D, H, W] index {idx}")
    return a


def _vec3(x, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.size != 3 or not np.isfinite(v).all():
        raise ValueError(f"{name} must be a finite scalar or 3 numbers (x, y, z), got {x!r}")
    return v


def index_to_world(voxel_size=1.0, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The grids' index-to-world transform (OpenVDB's row-vector form, translation in the last row):
    voxel centres at ``origin + voxel_size * (index + 1/2)``. Bakes record it in their manifest, so
    readers that cannot read a grid's own transform need not know this convention."""
    vs = _vec3(voxel_size, "voxel_size")
    if (vs <= 0).any():
        raise ValueError(f"voxel_size must be > 0, got {voxel_size!r}")
    m = np.diag([vs[0], vs[1], vs[2], 1.0])
    m[3, :3] = _vec3(origin, "origin") + 0.5 * vs
    return m


def write_density_vdb(path: PathLike, density, voxel_size=1.0, name: str = "density", origin=(0.0, 0.0, 0.0),
                      transform=None, row0: str = "top", clamp_negative: bool = True, tolerance: float = 0.0,
                      metadata: dict | None = None, velocity=None, velocity_scale: float = 1.0,
                      velocity_axes: str = "image", grids: dict | None = None) -> None:
    """Write ``density`` as a float fog-volume grid in a ``.vdb`` file, atomically.

    ``velocity`` (optional): ``[D, H, W, 2]`` / ``[H, W, 2]`` (vx to +column, vy UP, as
    ``SmokeSim.velocity``) or ``[.., 3]`` (vx, vy up, vz to +slice), written times
    ``velocity_scale`` (e.g. cells/step -> m/s) as a vec3 grid ``velocity`` in world axes
    (x = +column, y = +slice, z = up) beside the density, on the same voxels and transform:
    what Blender's volume motion blur and Principled Volume read. ``velocity_axes="world"``: the
    3 components are already world (x, y, z) vectors (``SmokeSim3D.velocity``).

    ``grids`` (optional): more float grids ``{name: [D, H, W] array}`` on the same voxels (e.g. the
    smoke's ``temperature``, which Blender's Principled Volume reads for blackbody emission).

    ``density``: ``[D, H, W]`` or ``[H, W]`` (one voxel thick), indexed as in the module
    docstring. ``voxel_size``: scalar or (sx, sy, sz) in world units. ``origin``: world position
    of the domain's min corner. ``transform``: optional 4x4 index-to-world matrix in OpenVDB's
    row-vector form (translation in the last row) that replaces voxel_size/origin.
    ``clamp_negative``: clamp solver undershoot to 0 (Blender renders negative density badly).
    ``tolerance``: voxels within it of 0 are stored inactive (sparser file); 0 keeps every
    nonzero voxel exact. ``metadata``: extra grid metadata (str/int/float/bool values).
    """
    if row0 not in ("top", "bottom"):
        raise ValueError(f"row0 must be 'top' or 'bottom', got {row0!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    a = _as_volume(density)
    if clamp_negative:
        a = np.maximum(a, 0.0)
    D, H, W = a.shape
    if transform is not None:
        m = np.asarray(transform, dtype=np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise ValueError(f"transform must be a finite 4x4 matrix, got shape {m.shape}")
    else:
        m = index_to_world(voxel_size, origin)
    # [D, H, W] -> VDB [x=W, y=D, z=H]
    if velocity_axes not in ("image", "world"):
        raise ValueError(f"velocity_axes must be 'image' or 'world', got {velocity_axes!r}")
    vol = _to_index(a, row0)
    extra = {}
    for gname, values in (grids or {}).items():
        if not isinstance(gname, str) or not gname or gname in (name, "velocity"):
            raise ValueError(f"grids: names must be non-empty strings other than {name!r} and 'velocity', "
                             f"got {gname!r}")
        g = _as_volume(values)
        if g.shape != a.shape:
            raise ValueError(f"grids[{gname!r}] must have the density's shape {a.shape}, got {g.shape}")
        extra[gname] = _to_index(g, row0)

    vel = None
    if velocity is not None:
        v = np.asarray(velocity, dtype=np.float64)
        if v.ndim == 3:
            v = v[None]
        if v.ndim != 4 or v.shape[:3] != (D, H, W) or v.shape[3] not in (2, 3):
            raise ValueError(f"velocity must be [D, H, W, 2|3] or [H, W, 2|3] matching density {(D, H, W)}, "
                             f"got shape {np.shape(velocity)}")
        if not (np.isfinite(velocity_scale) and np.isfinite(v).all()):
            raise ValueError("velocity and velocity_scale must be finite")
        if velocity_axes == "world":
            if v.shape[3] != 3:
                raise ValueError(f"velocity with velocity_axes='world' must have 3 components, got {v.shape[3]}")
            world = v * float(velocity_scale)
        else:
            world = np.zeros((D, H, W, 3))
            world[..., 0] = v[..., 0]               # +column -> +x
            world[..., 2] = v[..., 1]               # up -> +z
            if v.shape[3] == 3:
                world[..., 1] = v[..., 2]           # +slice -> +y
            world *= float(velocity_scale)
        vel = world.transpose(2, 0, 1, 3)           # [D, H, W, 3] -> [x=W, y=D, z=H, 3]
        if row0 == "top":
            vel = vel[:, :, ::-1]
        vel = np.ascontiguousarray(vel, dtype=np.float32)

    meta = {"metaphys_shape_dhw": f"{D} {H} {W}", "metaphys_row0": row0}
    for k, v in (metadata or {}).items():
        if not isinstance(v, (str, int, float, bool)):
            raise ValueError(f"metadata[{k!r}] must be str, int, float or bool, got {type(v).__name__}")
        meta[str(k)] = v
    tol = float(tolerance)
    grids = [vdbfile.GridToWrite(name, np.where(np.abs(vol) > tol, vol, 0.0), m, "fog volume", metadata=meta)]
    for gname, g in extra.items():
        grids.append(vdbfile.GridToWrite(gname, np.where(np.abs(g) > tol, g, 0.0), m, "unknown",
                                         metadata={"metaphys_shape_dhw": meta["metaphys_shape_dhw"],
                                                   "metaphys_row0": row0}))
    if vel is not None:
        vel = np.where(np.any(np.abs(vel) > tol, axis=-1, keepdims=True), vel, 0.0)
        grids.append(vdbfile.GridToWrite(
            "velocity", vel, m, "unknown",                   # Blender and Houdini expect a plain vec3 "velocity"
            vector_type="contravariant relative",            # a displacement-like vector
            metadata={"metaphys_shape_dhw": meta["metaphys_shape_dhw"], "metaphys_row0": row0,
                      "metaphys_velocity_scale": float(velocity_scale)}))
    with atomic_open(path, "wb") as fh:
        vdbfile.write_vdb(fh, grids, {"creator": f"metaphys {_version()}"})


def _to_index(a: np.ndarray, row0: str) -> np.ndarray:
    """[D, H, W] -> the VDB index layout [x = W, y = D, z = H] (row 0 highest with ``row0='top'``), float32."""
    vol = a.transpose(2, 0, 1)
    if row0 == "top":
        vol = vol[:, :, ::-1]
    return np.ascontiguousarray(vol, dtype=np.float32)


def _version() -> str:
    try:
        from ..version import __version__
    except ImportError:  # metaphys.io loaded as a top-level package (the Blender tests' stub engine does)
        return "unknown"
    return __version__


def read_vdb_grid(path: PathLike, name: str = "density", row0: str | None = None) -> tuple[np.ndarray, dict]:
    """Read float grid ``name`` back to ``[D, H, W]`` float32 (inverse of ``write_density_vdb``) and info.

    For files written by ``write_density_vdb`` the full written shape is restored (inactive
    zero voxels included) and ``row0`` defaults to the one used for writing. For other files
    the active bounding box is read (info ``index_min``/``index_max``), with ``row0='top'``.
    info: ``voxel_size`` (x, y, z), ``origin`` (domain min corner, world), ``grid_class``,
    ``metadata`` (grid metadata dict), ``index_min``, ``index_max``.
    """
    grid = _read(path, name)
    if grid.info.tree_type != vdbfile.FLOAT_TREE:
        raise ValueError(f"grid {name!r} of {str(path)!r} is a {grid.info.tree_type}, not a float grid "
                         "(read a velocity grid with read_vdb_velocity)")
    meta = dict(grid.info.metadata)
    shape_s = meta.get("metaphys_shape_dhw")
    if shape_s:  # written by write_density_vdb: the full written shape, inactive zeros included
        D, H, W = (int(s) for s in str(shape_s).split())
        lo, hi = (0, 0, 0), (W - 1, D - 1, H - 1)
        row0 = str(meta.get("metaphys_row0", "top")) if row0 is None else row0
    else:
        lo, hi = grid.active_bbox() or ((0, 0, 0), (-1, -1, -1))
        row0 = "top" if row0 is None else row0
    if row0 not in ("top", "bottom"):
        raise ValueError(f"row0 must be 'top' or 'bottom', got {row0!r}")
    vol = grid.dense(lo, hi) if min(h - l for l, h in zip(lo, hi)) >= 0 else np.zeros((0, 0, 0), np.float32)
    if row0 == "top":
        vol = vol[:, :, ::-1]
    out = np.ascontiguousarray(vol.transpose(1, 2, 0))  # [x, y, z] -> [D, H, W]
    m = grid.index_to_world
    vs = np.linalg.norm(m[:3, :3], axis=1)                # world length of one index step per axis
    c0 = np.append(np.asarray(lo, np.float64), 1.0) @ m
    info = {"voxel_size": tuple(vs.tolist()), "origin": tuple((c0[:3] - 0.5 * vs).tolist()),
            "grid_class": str(meta.get("class", "unknown")), "metadata": meta,
            "index_min": tuple(int(v) for v in lo), "index_max": tuple(int(v) for v in hi)}
    return out, info


def _read(path: PathLike, name: str) -> vdbfile.GridData:
    """Grid ``name`` of ``path``; ValueError naming both when the file or grid cannot be read."""
    try:
        return vdbfile.read_grid(os.fspath(path), name)
    except vdbfile.VdbFormatError as exc:
        raise ValueError(f"cannot read grid {name!r} from {str(path)!r}: {exc}") from None


def grid_names(path: PathLike) -> list[str]:
    """Names of the grids in a ``.vdb`` file (reads metadata only)."""
    return [g.name for g in vdbfile.read_grid_infos(os.fspath(path))]


def has_velocity(path: PathLike) -> bool:
    """True if the ``.vdb`` file holds a grid named ``velocity`` (False for an unreadable file)."""
    try:
        return "velocity" in grid_names(path)
    except ValueError:  # VdbFormatError: an unreadable file has no velocity for our purposes
        return False


def read_vdb_velocity(path: PathLike) -> np.ndarray:
    """The ``velocity`` grid of a file written by ``write_density_vdb(velocity=...)`` as ``[D, H, W, 3]``
    float32 world vectors (x = +column, y = +slice, z = up), in the written row order convention."""
    grid = _read(path, "velocity")
    meta = grid.info.metadata
    shape_s = meta.get("metaphys_shape_dhw")
    if not shape_s:
        raise ValueError(f"{str(path)!r}: the velocity grid was not written by metaphys (no metaphys_shape_dhw)")
    D, H, W = (int(x) for x in str(shape_s).split())
    vol = grid.dense((0, 0, 0), (W - 1, D - 1, H - 1))
    if str(meta.get("metaphys_row0", "top")) == "top":
        vol = vol[:, :, ::-1]
    return np.ascontiguousarray(vol.transpose(1, 2, 0, 3))
