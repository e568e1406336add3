"""OpenVDB ``.vdb`` volumes (a float grid named ``density``) for Blender's Volume objects.

Finding an ``openvdb`` module
-----------------------------
OpenVDB's Python binding is not on PyPI for our Python, but Blender's pip module (``bpy``)
bundles one, built for the same CPython 3.11 ABI, at::

    site-packages/bpy/<blender version>/python/lib/python3.11/site-packages/openvdb.cpython-311-*.so

with a RUNPATH to ``bpy/lib`` (``libopenvdb.so``, ``libtbb.so``). It loads into a plain venv
Python without importing bpy. The lookup (first hit wins, done lazily on first use, never at
import time):

1. ``$METAPHYS_OPENVDB``: an ``openvdb*.so``/``.pyd`` file or a directory holding one;
2. an ``openvdb`` module already imported or importable the normal way;
3. the module bundled in bpy, found with ``importlib.util.find_spec('bpy')`` (which locates
   bpy without importing it) and a glob under its folder;
4. ``pyopenvdb`` importable the normal way, or Debian/Ubuntu's ``python3-openvdb``
   (``apt-get install python3-openvdb``: OpenVDB 10 built for the system Python 3.11, at
   ``/usr/lib/python3/dist-packages/pyopenvdb.cpython-311-*.so``), loaded from that path by any
   CPython of the same version, a venv included. This is the CLI's OpenVDB without Blender.

PyPI has no OpenVDB binding for CPython 3.11 on Linux (``openvdb`` and ``pyopenvdb`` have no
installable distribution there; checked with usd-core's registry, 2026).

Only the single extension file is loaded (``spec_from_file_location``), so bpy's other bundled
packages (pxr, MaterialX, OpenImageIO...) are not put on ``sys.path``.

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

import glob
import importlib
import importlib.machinery
import importlib.util
import os
import sys

import numpy as np

from .atomic import PathLike, atomic_path

__all__ = ["vdb_available", "openvdb_location", "load_openvdb", "write_density_vdb", "read_vdb_grid",
           "read_vdb_velocity", "grid_names", "has_velocity", "OPENVDB_ENV"]

OPENVDB_ENV = "METAPHYS_OPENVDB"

_cache: dict = {}  # lazily filled by load_openvdb(): {"module": module-or-None, "tried": [...]}


def _ext_files(directory: str, names=("openvdb", "pyopenvdb")) -> list[str]:
    out = []
    for name in names:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            out += glob.glob(os.path.join(directory, name + suffix))
    return sorted(set(out))


# Debian/Ubuntu's python3-openvdb (`apt-get install python3-openvdb`) installs ``pyopenvdb`` for the
# system Python 3; a venv does not see dist-packages, but the same-ABI extension loads from its path.
SYSTEM_DIRS = ("/usr/lib/python3/dist-packages",)


def _bpy_candidates() -> list[str]:
    try:
        spec = importlib.util.find_spec("bpy")  # locates, does not import
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [os.path.dirname(spec.origin)]
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    out = []
    for root in roots:
        for pattern in (os.path.join(root, "*", "python", "lib", pyver, "site-packages"),  # Linux, macOS
                        os.path.join(root, "*", "python", "lib", "site-packages")):      # Windows
            for d in sorted(glob.glob(pattern), reverse=True):  # newest Blender version first
                out += _ext_files(d)
    return out


def _load_file(path: str):
    # the module name must be the one the extension was built as (PyInit_openvdb / PyInit_pyopenvdb)
    name = os.path.basename(path).split(".")[0]
    for loaded in ("openvdb", "pyopenvdb"):
        if loaded in sys.modules:  # never load a second copy of an OpenVDB extension
            return sys.modules[loaded]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot make an import spec for {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod



def _first_loadable(files, tried: list):
    """The first of ``files`` that loads as an extension module (failures appended to ``tried``)."""
    for f in files:
        try:
            return _load_file(f)
        except Exception as e:  # noqa: BLE001
            tried.append(f"{f}: {type(e).__name__}: {e}")
    return None

def load_openvdb(refresh: bool = False):
    """Return the ``openvdb`` module, or None if none can be loaded (see module docstring for the lookup)."""
    if _cache and not refresh:
        return _cache["module"]
    tried: list[str] = []
    mod = None
    env = os.environ.get(OPENVDB_ENV)
    if env:
        files = _ext_files(env) if os.path.isdir(env) else [env]
        for f in files:
            try:
                mod = _load_file(f)
                break
            except Exception as e:  # noqa: BLE001 - report every failed candidate
                tried.append(f"${OPENVDB_ENV}={f}: {type(e).__name__}: {e}")
        if not files:
            tried.append(f"${OPENVDB_ENV}={env}: no openvdb extension module there")
    if mod is None:
        try:
            mod = importlib.import_module("openvdb")
        except Exception as e:  # noqa: BLE001
            tried.append(f"import openvdb: {type(e).__name__}: {e}")
    if mod is None:
        cands = _bpy_candidates()
        if not cands:
            tried.append("bpy's bundled openvdb: bpy is not installed (or has no openvdb module)")
        mod = _first_loadable(cands, tried)
    if mod is None:  # Debian/Ubuntu python3-openvdb: importable as pyopenvdb, or loaded from its folder
        try:
            mod = importlib.import_module("pyopenvdb")
        except Exception as e:  # noqa: BLE001
            tried.append(f"import pyopenvdb: {type(e).__name__}: {e}")
    if mod is None:
        cands = [f for d in SYSTEM_DIRS for f in _ext_files(d, ("pyopenvdb",))]
        if not cands:
            tried.append(f"system pyopenvdb (apt-get install python3-openvdb): none in {', '.join(SYSTEM_DIRS)}")
        mod = _first_loadable(cands, tried)
    if mod is not None and not hasattr(mod, "FloatGrid"):
        tried.append(f"{getattr(mod, '__file__', mod)!r} has no FloatGrid: not the OpenVDB binding")
        mod = None
    _cache.clear()
    _cache.update(module=mod, tried=tried)
    return mod


def vdb_available() -> bool:
    """True if an OpenVDB Python module can be loaded (see the module docstring)."""
    return load_openvdb() is not None


def openvdb_location() -> str | None:
    """File the loaded openvdb module came from, or None."""
    mod = load_openvdb()
    return getattr(mod, "__file__", None) if mod is not None else None


def _require():
    mod = load_openvdb()
    if mod is None:
        tried = "\n  ".join(_cache.get("tried", []))
        raise RuntimeError(
            "writing .vdb needs an OpenVDB Python module, and none was found (PyPI has none for this "
            "Python). On Debian/Ubuntu: `apt-get install python3-openvdb` (metaphys loads its pyopenvdb "
            "into any same-version Python, venvs included). Or install Blender's Python module into "
            "this environment (`pip install bpy==5.0.1`): metaphys loads the openvdb module bundled "
            "inside it, without importing bpy. Or set "
            f"${OPENVDB_ENV} to an openvdb extension module (or its folder) built for Python "
            f"{sys.version_info.major}.{sys.version_info.minor}. Tried:\n  {tried}")
    return mod


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
                      metadata: dict | None = None, velocity=None, velocity_scale: float = 1.0) -> None:
    """Write ``density`` as a float fog-volume grid in a ``.vdb`` file, atomically.

    ``velocity`` (optional): ``[D, H, W, 2]`` / ``[H, W, 2]`` (vx to +column, vy UP, as
    ``SmokeSim.velocity``) or ``[.., 3]`` (vx, vy up, vz to +slice), written times
    ``velocity_scale`` (e.g. cells/step -> m/s) as a vec3 grid ``velocity`` in world axes
    (x = +column, y = +slice, z = up) beside the density, on the same voxels and transform:
    what Blender's volume motion blur and Principled Volume read.

    ``density``: ``[D, H, W]`` or ``[H, W]`` (one voxel thick), indexed as in the module
    docstring. ``voxel_size``: scalar or (sx, sy, sz) in world units. ``origin``: world position
    of the domain's min corner. ``transform``: optional 4x4 index-to-world matrix in OpenVDB's
    row-vector form (translation in the last row) that replaces voxel_size/origin.
    ``clamp_negative``: clamp solver undershoot to 0 (Blender renders negative density badly).
    ``tolerance``: voxels within it of 0 are stored inactive (sparser file); 0 keeps every
    nonzero voxel exact. ``metadata``: extra grid metadata (str/int/float/bool values).
    Raises RuntimeError (with how to get one) when no openvdb module is available.
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
    vol = a.transpose(2, 0, 1)
    if row0 == "top":
        vol = vol[:, :, ::-1]
    vol = np.ascontiguousarray(vol, dtype=np.float32)

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
        world = np.zeros((D, H, W, 3))
        world[..., 0] = v[..., 0]                   # +column -> +x
        world[..., 2] = v[..., 1]                   # up -> +z
        if v.shape[3] == 3:
            world[..., 1] = v[..., 2]               # +slice -> +y
        world *= float(velocity_scale)
        vel = world.transpose(2, 0, 1, 3)           # [D, H, W, 3] -> [x=W, y=D, z=H, 3]
        if row0 == "top":
            vel = vel[:, :, ::-1]
        vel = np.ascontiguousarray(vel, dtype=np.float32)

    vdb = _require()
    grid = vdb.FloatGrid()
    grid.copyFromArray(vol, tolerance=float(tolerance))
    grid.name = name
    grid.gridClass = vdb.GridClass.FOG_VOLUME
    grid.transform = vdb.createLinearTransform(m.tolist())
    meta = {"metaphys_shape_dhw": f"{D} {H} {W}", "metaphys_row0": row0}
    for k, v in (metadata or {}).items():
        if not isinstance(v, (str, int, float, bool)):
            raise ValueError(f"metadata[{k!r}] must be str, int, float or bool, got {type(v).__name__}")
        meta[str(k)] = v
    for k, v in meta.items():
        grid[k] = v
    try:
        from ..version import __version__ as ver
    except Exception:  # pragma: no cover
        ver = "unknown"
    grids = [grid]
    if vel is not None:
        vgrid = vdb.Vec3SGrid()
        vgrid.copyFromArray(vel, tolerance=(float(tolerance),) * 3)
        vgrid.name = "velocity"
        vgrid.gridClass = vdb.GridClass.UNKNOWN   # Blender and Houdini expect a plain vec3 "velocity"
        vgrid.vectorType = vdb.VectorType.CONTRAVARIANT_RELATIVE  # a displacement-like vector
        vgrid.transform = vdb.createLinearTransform(m.tolist())
        vgrid["metaphys_shape_dhw"] = meta["metaphys_shape_dhw"]
        vgrid["metaphys_row0"] = row0
        vgrid["metaphys_velocity_scale"] = float(velocity_scale)
        grids.append(vgrid)
    with atomic_path(path) as tmp:
        vdb.write(tmp, grids=grids, metadata={"creator": f"metaphys {ver}"})
    del grid, grids


def read_vdb_grid(path: PathLike, name: str = "density", row0: str | None = None) -> tuple[np.ndarray, dict]:
    """Read float grid ``name`` back to ``[D, H, W]`` float32 (inverse of ``write_density_vdb``) and info.

    For files written by ``write_density_vdb`` the full written shape is restored (inactive
    zero voxels included) and ``row0`` defaults to the one used for writing. For other files
    the active bounding box is read (info ``index_min``/``index_max``), with ``row0='top'``.
    info: ``voxel_size`` (x, y, z), ``origin`` (domain min corner, world), ``grid_class``,
    ``metadata`` (grid metadata dict), ``index_min``, ``index_max``.
    """
    vdb = _require()
    try:
        grid = vdb.read(os.fspath(path), name)
    except Exception as e:
        raise ValueError(f"cannot read grid {name!r} from {str(path)!r}: {e}") from e
    meta = dict(grid.metadata)
    lo, hi = grid.evalActiveVoxelBoundingBox()
    shape_s = meta.get("metaphys_shape_dhw")
    if shape_s:
        D, H, W = (int(s) for s in str(shape_s).split())
        lo = (0, 0, 0)
        hi = (W - 1, D - 1, H - 1)
        if row0 is None:
            row0 = str(meta.get("metaphys_row0", "top"))
    else:
        if row0 is None:
            row0 = "top"
    if row0 not in ("top", "bottom"):
        raise ValueError(f"row0 must be 'top' or 'bottom', got {row0!r}")
    dims = tuple(max(int(h) - int(l) + 1, 0) for l, h in zip(lo, hi))
    vol = np.zeros(dims, dtype=np.float32)
    if vol.size:
        grid.copyToArray(vol, ijk=tuple(int(v) for v in lo))
    if row0 == "top":
        vol = vol[:, :, ::-1]
    out = np.ascontiguousarray(vol.transpose(1, 2, 0))  # [x, y, z] -> [D, H, W]
    t = grid.transform
    vs = np.asarray(t.voxelSize(), dtype=np.float64)
    c0 = np.asarray(t.indexToWorld(tuple(float(v) for v in lo)), dtype=np.float64)
    info = {"voxel_size": tuple(vs.tolist()), "origin": tuple((c0 - 0.5 * vs).tolist()),
            "grid_class": str(grid.gridClass), "metadata": meta,
            "index_min": tuple(int(v) for v in lo), "index_max": tuple(int(v) for v in hi)}
    del t, grid
    return out, info


def grid_names(path: PathLike) -> list[str]:
    """Names of the grids in a ``.vdb`` file (reads metadata only)."""
    vdb = _require()
    return [g.name for g in vdb.readAllGridMetadata(os.fspath(path))]


def has_velocity(path: PathLike) -> bool:
    """True if the ``.vdb`` file holds a grid named ``velocity``; False also without an openvdb module."""
    if load_openvdb() is None:
        return False
    try:
        return "velocity" in grid_names(path)
    except Exception:  # noqa: BLE001 - an unreadable file has no velocity for our purposes
        return False


def read_vdb_velocity(path: PathLike) -> np.ndarray:
    """The ``velocity`` grid of a file written by ``write_density_vdb(velocity=...)`` as ``[D, H, W, 3]``
    float32 world vectors (x = +column, y = +slice, z = up), in the written row order convention."""
    vdb = _require()
    try:
        grid = vdb.read(os.fspath(path), "velocity")
    except Exception as e:
        raise ValueError(f"cannot read grid 'velocity' from {str(path)!r}: {e}") from e
    meta = dict(grid.metadata)
    shape_s = meta.get("metaphys_shape_dhw")
    if not shape_s:
        raise ValueError(f"{str(path)!r}: the velocity grid was not written by metaphys (no metaphys_shape_dhw)")
    D, H, W = (int(x) for x in str(shape_s).split())
    vol = np.zeros((W, D, H, 3), dtype=np.float32)
    grid.copyToArray(vol, ijk=(0, 0, 0))
    if str(meta.get("metaphys_row0", "top")) == "top":
        vol = vol[:, :, ::-1]
    del grid
    return np.ascontiguousarray(vol.transpose(1, 2, 0, 3))
