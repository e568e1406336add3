"""Regular H x W grid meshes (cloth) as OBJ / PLY / GLB files and per-frame sequences.

Conventions
-----------
* Vertex ``(i, j)`` (row i, column j) has index ``i * W + j``: vertices ``[H, W, 3]`` flatten in
  C order to ``[H*W, 3]``.
* UVs: ``u = j / (W-1)``, ``v = 1 - i / (H-1)``: row 0 is the top of the texture, like the PNGs
  written by ``metaphys.io.images``.
* Faces wind counter-clockwise in UV space: quad ``(i,j), (i+1,j), (i+1,j+1), (i,j+1)``, split
  into triangles ``(i,j),(i+1,j),(i+1,j+1)`` and ``(i,j),(i+1,j+1),(i,j+1)``.
* Coordinates: metaphys world space is Blender's (right-handed, +Z up). OBJ and PLY store them
  as given (in Blender import OBJ with ``up_axis='Z', forward_axis='Y'`` so they are not rotated,
  which keeps a rest OBJ in the same space as its PC2 cache). GLB stores glTF's +Y up, so by
  default ``(x, y, z)`` is written as ``(x, z, -y)``; Blender's glTF importer turns it back.
  ``y_up`` overrides this per call.
* Vertex order and count are kept exactly (trimesh is used with ``process=False``).

OBJ is written by hand (fast, keeps quads and UVs, floats as ``%.9g`` so float32 round-trips
exactly); PLY and GLB through trimesh (triangles). Every file is written atomically.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .atomic import PathLike, atomic_path, atomic_write_text
from .pc2 import check_frames

__all__ = ["grid_faces", "grid_uvs", "write_mesh", "write_obj", "write_rest_obj", "write_sequence",
           "sequence_path", "MESH_FORMATS"]

MESH_FORMATS = ("obj", "ply", "glb")


def _check_hw(H: int, W: int) -> tuple[int, int]:
    H, W = int(H), int(W)
    if H < 2 or W < 2:
        raise ValueError(f"a grid mesh needs H >= 2 and W >= 2, got H={H}, W={W}")
    return H, W


def grid_faces(H: int, W: int, quads: bool = False) -> np.ndarray:
    """Faces of an H x W vertex grid (0-based): ``[(H-1)(W-1), 4]`` quads or ``[2(H-1)(W-1), 3]`` triangles."""
    H, W = _check_hw(H, W)
    idx = np.arange(H * W, dtype=np.int64).reshape(H, W)
    a = idx[:-1, :-1].ravel()
    b = idx[1:, :-1].ravel()
    c = idx[1:, 1:].ravel()
    d = idx[:-1, 1:].ravel()
    if quads:
        return np.stack([a, b, c, d], axis=1)
    tri = np.empty((a.size * 2, 3), dtype=np.int64)
    tri[0::2] = np.stack([a, b, c], axis=1)
    tri[1::2] = np.stack([a, c, d], axis=1)
    return tri


def grid_uvs(H: int, W: int) -> np.ndarray:
    """UVs ``[H*W, 2]`` float32 of an H x W grid: ``u = j/(W-1)``, ``v = 1 - i/(H-1)``."""
    H, W = _check_hw(H, W)
    u = np.linspace(0.0, 1.0, W, dtype=np.float64)
    v = 1.0 - np.linspace(0.0, 1.0, H, dtype=np.float64)
    uu, vv = np.meshgrid(u, v)  # [H, W]
    return np.stack([uu.ravel(), vv.ravel()], axis=1).astype(np.float32)


def _vertices(vertices, H: int | None, W: int | None, name: str = "vertices"):
    a = np.asarray(vertices)
    if a.ndim == 3 and a.shape[-1] == 3:
        if (H is not None and H != a.shape[0]) or (W is not None and W != a.shape[1]):
            raise ValueError(f"{name} has grid shape {a.shape[:2]} but H={H}, W={W} were given")
        H, W = a.shape[0], a.shape[1]
        a = a.reshape(-1, 3)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must have shape [H*W, 3] or [H, W, 3], got {tuple(np.shape(vertices))}")
    if H is not None and W is not None and H * W != a.shape[0]:
        raise ValueError(f"{name} has {a.shape[0]} vertices, but H*W = {H}*{W} = {H * W}")
    v = check_frames(a, name=name)[0]
    return v, H, W


def _faces(faces, n_vertices: int) -> np.ndarray:
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] not in (3, 4) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be an integer array [M, 3] or [M, 4], got shape {f.shape} dtype {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= n_vertices):
        raise ValueError(f"faces index vertices in [{f.min()}, {f.max()}] but there are {n_vertices} vertices")
    return f.astype(np.int64, copy=False)


def _triangulate(f: np.ndarray) -> np.ndarray:
    if f.shape[1] == 3:
        return f
    tri = np.empty((f.shape[0] * 2, 3), dtype=f.dtype)
    tri[0::2] = f[:, [0, 1, 2]]
    tri[1::2] = f[:, [0, 2, 3]]
    return tri


def _to_y_up(v: np.ndarray) -> np.ndarray:
    return np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)


def _format_of(path: PathLike, format: str | None) -> str:
    fmt = (format or Path(path).suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"mesh format must be one of {MESH_FORMATS}, got {fmt!r} (from {str(path)!r})")
    return fmt


def _obj_text(v: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None, object_name: str | None,
              header: str | None) -> str:
    buf = io.StringIO()
    buf.write(f"# {header}\n" if header else "# metaphys grid mesh\n")
    if object_name:
        buf.write(f"o {object_name}\n")
    np.savetxt(buf, v, fmt="v %.9g %.9g %.9g")
    if uvs is not None:
        np.savetxt(buf, uvs, fmt="vt %.9g %.9g")
    k = faces.shape[1]
    f1 = faces + 1
    if uvs is not None:
        fmt = "f " + " ".join(["%d/%d"] * k)
        np.savetxt(buf, np.repeat(f1, 2, axis=1), fmt=fmt)
    else:
        np.savetxt(buf, f1, fmt="f " + " ".join(["%d"] * k))
    return buf.getvalue()


def write_obj(path: PathLike, vertices, faces, uvs=None, object_name: str | None = "mesh",
              y_up: bool = False, header: str | None = None) -> None:
    """Write an OBJ by hand (atomic): ``v`` lines, optional per-vertex ``vt`` lines, tri or quad ``f`` lines.

    ``uvs`` ``[V, 2]`` are indexed like the vertices (``f a/a b/b ...``).
    """
    v, _, _ = _vertices(vertices, None, None)
    f = _faces(faces, v.shape[0])
    if uvs is not None:
        uvs = np.asarray(uvs, dtype=np.float32)
        if uvs.shape != (v.shape[0], 2):
            raise ValueError(f"uvs must have shape [{v.shape[0]}, 2], got {uvs.shape}")
    if y_up:
        v = _to_y_up(v)
    atomic_write_text(path, _obj_text(v, f, uvs, object_name, header))


def write_mesh(path: PathLike, vertices, faces=None, format: str | None = None, H: int | None = None,
               W: int | None = None, uvs=None, y_up: bool | None = None) -> None:
    """Write one mesh frame as OBJ, PLY or GLB, atomically.

    ``vertices``: ``[H*W, 3]`` (give ``H``, ``W`` when ``faces`` is None) or ``[H, W, 3]``.
    ``faces``: ``[M, 3]`` or ``[M, 4]`` (quads are kept in OBJ, triangulated for PLY/GLB);
    default: the grid's quads for OBJ, triangles otherwise. ``uvs``: ``[V, 2]``, ``True`` for
    ``grid_uvs(H, W)``, or None (OBJ and GLB store them; PLY ignores them).
    ``format``: 'obj' | 'ply' | 'glb'; default from the file extension.
    ``y_up``: write (x, z, -y); default True for GLB only (see module docstring).
    """
    fmt = _format_of(path, format)
    v, H, W = _vertices(vertices, H, W)
    if faces is None:
        if H is None or W is None:
            raise ValueError("write_mesh needs faces, or H and W (or vertices shaped [H, W, 3]) for a grid")
        faces = grid_faces(H, W, quads=(fmt == "obj"))
    f = _faces(faces, v.shape[0])
    if uvs is True:
        if H is None or W is None:
            raise ValueError("uvs=True needs H and W (or vertices shaped [H, W, 3])")
        uvs = grid_uvs(H, W)
    elif uvs is not None:
        uvs = np.asarray(uvs, dtype=np.float32)
        if uvs.shape != (v.shape[0], 2):
            raise ValueError(f"uvs must have shape [{v.shape[0]}, 2], got {uvs.shape}")
    if y_up is None:
        y_up = fmt == "glb"
    if fmt == "obj":
        write_obj(path, v, f, uvs=uvs, y_up=y_up)
        return
    import trimesh  # lazy: trimesh import costs ~0.3 s

    if y_up:
        v = _to_y_up(v)
    visual = None
    if uvs is not None and fmt == "glb":
        visual = trimesh.visual.TextureVisuals(uv=uvs)
    mesh = trimesh.Trimesh(vertices=v, faces=_triangulate(f), visual=visual, process=False, validate=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=fmt)


def write_rest_obj(path: PathLike, vertices, H: int, W: int, object_name: str = "cloth",
                   y_up: bool = False) -> None:
    """Write the rest (or first) frame of an H x W cloth as an OBJ with UVs and quad faces, atomically.

    ``H*W`` ``v`` lines, ``H*W`` ``vt`` lines (``grid_uvs``), ``(H-1)(W-1)`` quads ``f a/a b/b c/c d/d``.
    The vertex order equals the PC2/MDD vertex order, so Blender's Mesh Cache modifier applies.
    """
    v, H, W = _vertices(vertices, H, W)
    H, W = _check_hw(H, W)
    write_obj(path, v, grid_faces(H, W, quads=True), uvs=grid_uvs(H, W), object_name=object_name,
              y_up=y_up, header=f"metaphys rest mesh, grid {H}x{W}, quads, per-vertex UVs")


def sequence_path(directory: PathLike, frame: int, format: str = "obj", prefix: str = "frame_",
                  digits: int = 4) -> str:
    """``directory/frame_0001.obj`` for frame 1 (Blender's numbered-sequence naming)."""
    fmt = _format_of(f"x.{format}", None)
    return os.path.join(os.fspath(directory), f"{prefix}{int(frame):0{digits}d}.{fmt}")


def write_sequence(directory: PathLike, frames, H: int | None = None, W: int | None = None,
                   format: str = "obj", start: int = 1, faces=None, uvs=True, prefix: str = "frame_",
                   digits: int = 4, y_up: bool | None = None) -> list[str]:
    """Write ``frames`` ``[F, H*W, 3]`` or ``[F, H, W, 3]`` as ``frame_0001.obj``... (atomic per file).

    The directory is created if missing. All frames are validated (finite, same V) before the
    first file is written. Returns the paths written, in order.
    """
    a = np.asarray(frames)
    if a.ndim == 4 and a.shape[-1] == 3:
        if (H is not None and H != a.shape[1]) or (W is not None and W != a.shape[2]):
            raise ValueError(f"frames have grid shape {a.shape[1:3]} but H={H}, W={W} were given")
        H, W = a.shape[1], a.shape[2]
        a = a.reshape(a.shape[0], -1, 3)
    a = check_frames(a)
    if faces is None and (H is None or W is None):
        raise ValueError("write_sequence needs H and W (or frames shaped [F, H, W, 3]) or faces")
    if faces is None:
        faces = grid_faces(H, W, quads=(format.lower() == "obj"))
    if uvs is True:
        uvs = grid_uvs(H, W) if H is not None and W is not None else None
    os.makedirs(directory, exist_ok=True)
    paths = []
    for k in range(a.shape[0]):
        p = sequence_path(directory, start + k, format, prefix, digits)
        write_mesh(p, a[k], faces=faces, format=format, uvs=uvs, y_up=y_up)
        paths.append(p)
    return paths
