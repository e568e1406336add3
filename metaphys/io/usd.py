"""USD caches of bakes (``usd-core``'s ``pxr``), free of bpy.

* ``write_cloth_usd``: one ``UsdGeomMesh`` (default prim ``/cloth``) with its topology and UVs
  (``primvars:st``, face-varying, indexed) authored once and ``points``, ``normals`` and
  ``extent`` time-sampled per frame. Normals are sampled per frame on purpose: normals authored
  once would be the rest pose's and shade a moving cloth wrongly in every consumer that trusts
  authored normals (usdview, Houdini, Omniverse).
* ``write_volume_usd``: one ``UsdVolVolume`` (default prim ``/smoke``) whose ``OpenVDBAsset``
  fields reference a VDB frame sequence (``filePath`` time-sampled, paths relative to the USD file).

Stage metadata as Blender writes and expects it: ``metersPerUnit = 1``, ``upAxis = Z``,
``timeCodesPerSecond = framesPerSecond = fps``, time codes = frame numbers
(``startTimeCode``/``endTimeCode`` = first/last baked frame).

Writes are atomic: the stage is built in an anonymous in-memory layer and exported to a
temporary file in the target's folder, which then replaces the target (``metaphys.io.atomic``).
``pxr`` is imported on first use, so importing this module never needs usd-core.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from .atomic import PathLike, atomic_path
from .pc2 import check_frames

__all__ = ["usd_available", "require_pxr", "USD_REQUIREMENT", "write_cloth_usd", "read_cloth_usd",
           "write_volume_usd", "vertex_normals"]

# The pinned requirement (requirements.txt); named in every "usd-core is missing" message.
USD_REQUIREMENT = "usd-core==26.11"


def require_pxr():
    """Import and return the ``pxr`` package, or raise ImportError saying how to get it."""
    try:
        import pxr  # noqa: F401
        from pxr import Gf, Sdf, Usd, UsdGeom, UsdVol, Vt  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"USD output needs usd-core (the 'pxr' module), which cannot be imported here "
                          f"({exc}); install it with: pip install '{USD_REQUIREMENT}' "
                          "(it is in requirements.txt)") from None
    return pxr


def usd_available() -> bool:
    """True if ``pxr`` (usd-core) imports."""
    try:
        require_pxr()
    except ImportError:
        return False
    return True


def _stage_metadata(stage, start: int, end: int, fps: float) -> None:
    from pxr import UsdGeom
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    stage.SetTimeCodesPerSecond(float(fps))
    stage.SetFramesPerSecond(float(fps))
    stage.SetStartTimeCode(float(start))
    stage.SetEndTimeCode(float(end))


def _export(stage, path: PathLike, comment: str) -> None:
    layer = stage.GetRootLayer()
    layer.comment = comment
    target = os.fspath(path)
    with atomic_path(target) as tmp:  # tmp keeps the target's extension: .usdc -> crate, .usda -> text
        if not layer.Export(tmp):
            raise OSError(f"USD could not write {target!r}")


def _faces_array(faces, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """``faces`` [F, k] (one polygon size) or a list of index lists -> (counts, flat indices), checked."""
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        counts = np.full(faces.shape[0], faces.shape[1], dtype=np.int32)
        flat = faces.reshape(-1)
    else:
        polys = [np.asarray(f).reshape(-1) for f in faces]
        counts = np.asarray([len(p) for p in polys], dtype=np.int32)
        flat = np.concatenate(polys) if polys else np.zeros(0, dtype=np.int64)
    if counts.size == 0:
        raise ValueError("faces must hold at least one polygon")
    if (counts < 3).any():
        raise ValueError(f"every face needs >= 3 vertices, face {int(np.argmin(counts >= 3))} has "
                         f"{int(counts[counts < 3][0])}")
    if not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"face indices must be integers, got dtype {flat.dtype}")
    if flat.min() < 0 or flat.max() >= n_vertices:
        raise ValueError(f"face indices must be in [0, {n_vertices}), got the range [{flat.min()}, {flat.max()}]")
    return counts, flat.astype(np.int32)


def vertex_normals(points: np.ndarray, counts: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``[V, 3]`` float32 of polygons (fan-triangulated), right-handed."""
    p = np.asarray(points, dtype=np.float64)
    n = np.zeros_like(p)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for k in np.unique(counts):  # vectorised per polygon size
        sel = starts[counts == k]
        poly = indices[sel[:, None] + np.arange(k)[None, :]]  # [P, k]
        for t in range(1, k - 1):
            a, b, c = poly[:, 0], poly[:, t], poly[:, t + 1]
            fn = np.cross(p[b] - p[a], p[c] - p[a])  # |fn| = 2 * area: area weighting for free
            for v in (a, b, c):
                np.add.at(n, v, fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 0, n / np.where(length > 0, length, 1.0), np.array([0.0, 0.0, 1.0]))
    return n.astype(np.float32)


def write_cloth_usd(path: PathLike, frames, faces, uvs=None, start_frame: int = 1, fps: float = 24.0,
                    name: str = "cloth", normals: bool = True, double_sided: bool = True) -> None:
    """Write a cloth bake as a USD mesh cache (``.usdc`` binary crate, ``.usda`` text), atomically.

    ``frames``: ``[F, V, 3]`` positions (stored as float32, exactly as the PC2 stores them; already
    in the output space, e.g. with the bake's ``output_matrix`` applied); frame ``k`` is time code
    ``start_frame + k``. ``faces``: ``[P, k]`` vertex indices (or a list of polygons), wound
    counter-clockwise seen from the front. ``uvs``: ``[V, 2]`` per-vertex UVs or None.
    """
    pxr = require_pxr()
    from pxr import Gf, Sdf, Usd, UsdGeom, Vt  # noqa: F401
    a = check_frames(frames, name="frames")
    F, V = a.shape[0], a.shape[1]
    counts, indices = _faces_array(np.asarray(faces) if not isinstance(faces, list) else faces, V)
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a number > 0, got {fps!r}")
    if not Sdf.Path.IsValidIdentifier(name):
        raise ValueError(f"name must be a valid USD prim name (letters, digits, _), got {name!r}")
    if uvs is not None:
        uv = np.asarray(uvs, dtype=np.float32)
        if uv.shape != (V, 2) or not np.isfinite(uv).all():
            raise ValueError(f"uvs must be a finite [V, 2] = [{V}, 2] array, got shape {uv.shape}")

    layer = Sdf.Layer.CreateAnonymous(".usdc")
    stage = Usd.Stage.Open(layer)
    start = int(start_frame)
    _stage_metadata(stage, start, start + F - 1, fps)
    mesh = UsdGeom.Mesh.Define(stage, Sdf.Path("/" + name))
    stage.SetDefaultPrim(mesh.GetPrim())
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)  # a polygon cache, not a subdivision cage
    mesh.CreateOrientationAttr(UsdGeom.Tokens.rightHanded)
    mesh.CreateDoubleSidedAttr(bool(double_sided))
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(counts))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(indices))
    if uvs is not None:
        st = UsdGeom.PrimvarsAPI(mesh).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray,
                                                     UsdGeom.Tokens.faceVarying)
        st.Set(Vt.Vec2fArray.FromNumpy(uv))
        st.SetIndices(Vt.IntArray.FromNumpy(indices))  # face corner -> its vertex's UV
    points_attr = mesh.CreatePointsAttr()
    extent_attr = mesh.CreateExtentAttr()
    normals_attr = None
    if normals:
        normals_attr = mesh.CreateNormalsAttr()
        mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    for k in range(F):
        t = Usd.TimeCode(start + k)
        pts = a[k]
        points_attr.Set(Vt.Vec3fArray.FromNumpy(pts), t)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        extent_attr.Set(Vt.Vec3fArray([Gf.Vec3f(*lo.tolist()), Gf.Vec3f(*hi.tolist())]), t)
        if normals_attr is not None:
            normals_attr.Set(Vt.Vec3fArray.FromNumpy(vertex_normals(pts, counts, indices)), t)
    _export(stage, path, f"metaphys cloth cache: {F} frames of {V} vertices from frame {start} at {fps:g} fps")


def read_cloth_usd(path: PathLike, name: str | None = None) -> dict:
    """Read a cache written by ``write_cloth_usd``: ``{"frames" [F, V, 3] float32, "times", "counts",
    "indices", "uvs", "meters_per_unit", "up_axis", "fps", "start", "end"}``."""
    require_pxr()
    from pxr import Usd, UsdGeom
    stage = Usd.Stage.Open(os.fspath(path))
    if stage is None:
        raise ValueError(f"cannot open {os.fspath(path)!r} as a USD stage")
    prim = stage.GetPrimAtPath("/" + name) if name else stage.GetDefaultPrim()
    if not prim or not prim.IsA(UsdGeom.Mesh):
        raise ValueError(f"{os.fspath(path)!r} has no mesh prim {('/' + name) if name else '(default prim)'}")
    mesh = UsdGeom.Mesh(prim)
    pts = mesh.GetPointsAttr()
    times = pts.GetTimeSamples()
    frames = np.stack([np.asarray(pts.Get(t), dtype=np.float32) for t in times]) if times else \
        np.asarray(pts.Get(), dtype=np.float32)[None]
    st = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st")
    return {"frames": frames, "times": list(times),
            "counts": np.asarray(mesh.GetFaceVertexCountsAttr().Get()),
            "indices": np.asarray(mesh.GetFaceVertexIndicesAttr().Get()),
            "uvs": np.asarray(st.Get(), dtype=np.float32) if st and st.HasValue() else None,
            "meters_per_unit": UsdGeom.GetStageMetersPerUnit(stage), "up_axis": str(UsdGeom.GetStageUpAxis(stage)),
            "fps": stage.GetTimeCodesPerSecond(), "start": stage.GetStartTimeCode(), "end": stage.GetEndTimeCode()}


def write_volume_usd(path: PathLike, files: Mapping[str, Mapping[int, str]], start_frame: int | None = None,
                     end_frame: int | None = None, fps: float = 24.0, name: str = "smoke") -> None:
    """Write a ``UsdVolVolume`` whose fields reference VDB frame sequences, atomically.

    ``files``: ``{field name (= VDB grid name, e.g. "density"): {frame number: VDB path}}``;
    paths are stored relative to ``path``'s folder (``./density/density_0001.vdb``) so the bake
    folder can move. Each field is a ``UsdVolOpenVDBAsset`` prim ``/<name>/<field>`` with
    ``fieldName`` = the grid name and a time-sampled ``filePath``.
    """
    require_pxr()
    from pxr import Sdf, Usd, UsdGeom, UsdVol
    if not files or not any(files.values()):
        raise ValueError("files must name at least one field with at least one frame")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a number > 0, got {fps!r}")
    numbers = sorted({int(n) for seq in files.values() for n in seq})
    start = numbers[0] if start_frame is None else int(start_frame)
    end = numbers[-1] if end_frame is None else int(end_frame)
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))

    layer = Sdf.Layer.CreateAnonymous(".usda")
    stage = Usd.Stage.Open(layer)
    _stage_metadata(stage, start, end, fps)
    vol = UsdVol.Volume.Define(stage, Sdf.Path("/" + name))
    stage.SetDefaultPrim(vol.GetPrim())
    for field, seq in files.items():
        if not Sdf.Path.IsValidIdentifier(field):
            raise ValueError(f"field name must be a valid USD prim name, got {field!r}")
        asset = UsdVol.OpenVDBAsset.Define(stage, vol.GetPath().AppendChild(field))
        asset.CreateFieldNameAttr(field)
        fp = asset.CreateFilePathAttr()
        for n in sorted(seq):
            rel = os.path.relpath(os.path.abspath(seq[n]), folder).replace(os.sep, "/")
            fp.Set(Sdf.AssetPath("./" + rel if not rel.startswith(".") else rel), Usd.TimeCode(int(n)))
        vol.CreateFieldRelationship(field, asset.GetPath())
    _export(stage, path, f"metaphys smoke: VDB sequences of {', '.join(files)} for frames {start}-{end} at {fps:g} fps")
