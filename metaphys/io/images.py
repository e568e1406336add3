"""Smoke density as images: 16-bit grayscale PNGs, flipbook sprite sheets (+ JSON layout), .npz dumps.

Density to pixels
-----------------
``pixel = round(clip(density, 0, vmax) / vmax * maxval)`` with ``maxval = 65535`` (16-bit) or
``255`` (8-bit): negative densities (solver undershoot) clamp to 0, values above ``vmax``
saturate. ``vmax`` defaults to the frame's own max for a single image and to the max over all
frames for sequences and flipbooks (so brightness is comparable across frames). A ``vmax`` of 0
(all-zero density) gives a black image. Store the ``vmax`` used (the sequence writers return
it; the flipbook sidecar records it) to map pixels back to density: ``density = pixel/maxval*vmax``.

Orientation: array row 0 is the image's top row (``row0='top'``, the default). Pass
``row0='bottom'`` for arrays whose row 0 is the bottom of the domain (y up); they are flipped.
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np

from .atomic import PathLike, atomic_open, atomic_write_text

__all__ = ["density_to_pixels", "write_density_png", "write_density_sequence", "read_png",
           "read_density_png", "write_flipbook", "read_flipbook_layout", "write_frame_npz",
           "read_frame_npz", "sequence_max"]


def _check_field(a, name: str, ndim: int | tuple = 2) -> np.ndarray:
    arr = np.asarray(a)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        raise ValueError(f"{name} must be a {' or '.join(f'{n}-D' for n in ndims)} array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == bool):
        raise ValueError(f"{name} must be real numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} has a non-finite value at index {idx}")
    return arr


def _check_row0(row0: str) -> None:
    if row0 not in ("top", "bottom"):
        raise ValueError(f"row0 must be 'top' or 'bottom', got {row0!r}")


def _check_bits(bits: int) -> int:
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    return 65535 if bits == 16 else 255


def sequence_max(frames) -> float:
    """Max of ``frames`` clamped at 0 (the default ``vmax`` of sequences and flipbooks)."""
    a = _check_field(frames, "frames", (2, 3))
    return float(max(a.max(initial=0.0), 0.0))


def density_to_pixels(density, vmax: float | None = None, bits: int = 16, row0: str = "top") -> np.ndarray:
    """Map a density ``[H, W]`` (or ``[F, H, W]``) to uint16/uint8 pixels (see module docstring)."""
    maxval = _check_bits(bits)
    _check_row0(row0)
    d = _check_field(density, "density", (2, 3))
    if vmax is None:
        vmax = float(max(d.max(initial=0.0), 0.0))
    vmax = float(vmax)
    if not (math.isfinite(vmax) and vmax >= 0):
        raise ValueError(f"vmax must be finite and >= 0, got {vmax}")
    if vmax == 0:
        q = np.zeros(d.shape, dtype=np.float64)
    else:
        q = np.clip(d / vmax, 0.0, 1.0) * maxval
    px = np.rint(q).astype(np.uint16 if bits == 16 else np.uint8)
    if row0 == "bottom":
        px = px[..., ::-1, :]
    return np.ascontiguousarray(px)


def _png_bytes(px: np.ndarray) -> bytes:
    from PIL import Image

    if px.dtype == np.uint16:
        img = Image.frombytes("I;16", (px.shape[1], px.shape[0]), px.astype("<u2").tobytes())
    else:
        img = Image.frombytes("L", (px.shape[1], px.shape[0]), px.tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_density_png(path: PathLike, density, vmax: float | None = None, bits: int = 16,
                      row0: str = "top") -> float:
    """Write ``density`` ``[H, W]`` as a grayscale PNG (16-bit by default), atomically; return the vmax used."""
    d = _check_field(density, "density", 2)
    if vmax is None:
        vmax = float(max(d.max(initial=0.0), 0.0))
    px = density_to_pixels(d, vmax, bits, row0)
    with atomic_open(path, "wb") as fh:
        fh.write(_png_bytes(px))
    return float(vmax)


def write_density_sequence(directory: PathLike, frames, vmax: float | None = None, bits: int = 16,
                           start: int = 1, prefix: str = "density_", digits: int = 4,
                           row0: str = "top") -> tuple[list[str], float]:
    """Write ``frames`` ``[F, H, W]`` as ``density_0001.png``...; one ``vmax`` (default: sequence max) for all.

    Returns ``(paths, vmax)``.
    """
    a = _check_field(frames, "frames", 3)
    if vmax is None:
        vmax = sequence_max(a)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for k in range(a.shape[0]):
        p = os.path.join(os.fspath(directory), f"{prefix}{start + k:0{digits}d}.png")
        write_density_png(p, a[k], vmax, bits, row0)
        paths.append(p)
    return paths, float(vmax)


def read_png(path: PathLike) -> np.ndarray:
    """Read a grayscale PNG as uint16 (16-bit files) or uint8 (8-bit files), ``[H, W]``, row 0 at the top."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L"):
            return np.frombuffer(img.tobytes(), dtype="<u2" if img.mode != "I;16B" else ">u2").reshape(
                img.size[1], img.size[0]).astype(np.uint16)
        if img.mode == "I":
            return np.asarray(img, dtype=np.int64).astype(np.uint16)
        if img.mode == "L":
            return np.asarray(img, dtype=np.uint8)
        raise ValueError(f"{str(path)!r}: expected a grayscale PNG, got PIL mode {img.mode!r}")


def read_density_png(path: PathLike, vmax: float = 1.0, row0: str = "top") -> np.ndarray:
    """Read a density PNG back to float64 ``[H, W]``: ``pixel / maxval * vmax``."""
    _check_row0(row0)
    px = read_png(path)
    maxval = 65535.0 if px.dtype == np.uint16 else 255.0
    d = px.astype(np.float64) / maxval * float(vmax)
    return d[::-1].copy() if row0 == "bottom" else d


def write_flipbook(path: PathLike, frames, columns: int, vmax: float | None = None, bits: int = 8,
                   row0: str = "top", fps: float | None = None, sidecar: PathLike | None = None) -> dict:
    """Tile ``frames`` ``[F, H, W]`` into one grayscale sprite-sheet PNG plus a JSON layout sidecar.

    Tiles go left to right, then top to bottom (frame k at tile row ``k // columns``, column
    ``k % columns``), the order of Unity's Texture Sheet Animation and Unreal's SubUV; unused
    tiles of the last row are black. The sidecar (default: ``path`` with ``.json``) holds
    ``columns, rows, frames, tile_width, tile_height, width, height, bits, vmax, order`` and
    per-frame ``tiles`` as pixel rects ``{"frame", "x", "y", "w", "h"}`` (origin top-left) and
    ``uv`` rects ``[u0, v0, u1, v1]`` (origin bottom-left, as engines sample). Both files are
    atomic; the layout dict is returned.
    """
    a = _check_field(frames, "frames", 3)
    F, H, W = a.shape
    if F == 0:
        raise ValueError("frames is empty")
    columns = int(columns)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    columns = min(columns, F)
    rows = -(-F // columns)
    if vmax is None:
        vmax = sequence_max(a)
    px = density_to_pixels(a, vmax, bits, row0)  # [F, H, W]
    sheet = np.zeros((rows * H, columns * W), dtype=px.dtype)
    tiles = []
    for k in range(F):
        r, c = divmod(k, columns)
        sheet[r * H:(r + 1) * H, c * W:(c + 1) * W] = px[k]
        tiles.append({"frame": k, "x": c * W, "y": r * H, "w": W, "h": H,
                      "uv": [c / columns, 1.0 - (r + 1) / rows, (c + 1) / columns, 1.0 - r / rows]})
    layout = {
        "image": Path(path).name, "frames": F, "columns": columns, "rows": rows,
        "tile_width": W, "tile_height": H, "width": columns * W, "height": rows * H,
        "bits": bits, "vmax": float(vmax), "fps": fps,
        "order": "row-major: left to right, then top to bottom; frame 0 top-left",
        "pixel_to_density": "density = pixel / (2**bits - 1) * vmax",
        "tiles": tiles,
    }
    with atomic_open(path, "wb") as fh:
        fh.write(_png_bytes(sheet))
    side = Path(sidecar) if sidecar is not None else Path(path).with_suffix(".json")
    atomic_write_text(side, json.dumps(layout, sort_keys=True, indent=2, allow_nan=False) + "\n")
    return layout


def read_flipbook_layout(path: PathLike) -> dict:
    """Read a flipbook's JSON sidecar (give the sidecar or the PNG path)."""
    p = Path(path)
    if p.suffix.lower() == ".png":
        p = p.with_suffix(".json")
    with open(p, encoding="utf-8") as fh:
        return json.load(fh)


def write_frame_npz(path: PathLike, density=None, velocity=None, pressure=None, compressed: bool = False,
                    allow_nonfinite: bool = False, **extra) -> None:
    """Write one simulation frame's fields to ``.npz`` atomically (arrays stored as given; None skipped).

    Typical shapes: density ``[H, W]``, velocity ``[2, H, W]`` (or a MAC layout), pressure ``[H, W]``.
    Non-finite values raise ValueError unless ``allow_nonfinite`` (for debugging dumps of a
    diverged frame).
    """
    arrays = {k: v for k, v in dict(density=density, velocity=velocity, pressure=pressure, **extra).items()
              if v is not None}
    if not arrays:
        raise ValueError("write_frame_npz needs at least one array")
    out = {}
    for k, v in arrays.items():
        arr = np.asarray(v)
        if arr.dtype == object:
            raise ValueError(f"{k} must be a numeric array, got dtype object")
        if not allow_nonfinite and np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"{k} has a non-finite value at index {idx}; pass allow_nonfinite=True to dump it anyway")
        out[k] = arr
    with atomic_open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **out)


def read_frame_npz(path: PathLike) -> dict:
    """Read a frame ``.npz`` into a dict of arrays."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
