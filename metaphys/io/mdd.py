"""MDD vertex caches (LightWave's format, read by Blender's Mesh Cache modifier and many DCCs).

Layout (big endian), as Blender's ``MOD_meshcache_mdd`` reads it::

    int32   numFrames           F
    int32   numPoints           V
    float32 times[F]            time of each frame in seconds
    float32 xyz[F][V][3]        positions, frame-major

so a file is exactly ``8 + 4*F + 12*F*V`` bytes.
"""
from __future__ import annotations

import struct

import numpy as np

from .atomic import PathLike, atomic_open
from .pc2 import check_frames

__all__ = ["write_mdd", "read_mdd"]

_HEADER = struct.Struct(">ii")


def write_mdd(path: PathLike, frames, times=None, fps: float = 24.0) -> None:
    """Write ``frames`` ``[F, V, 3]`` as MDD, atomically.

    ``times`` (seconds, length F, finite) defaults to ``arange(F) / fps``.
    """
    a = check_frames(frames)
    f = a.shape[0]
    if times is None:
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive finite number, got {fps}")
        t = np.arange(f, dtype=np.float64) / float(fps)
    else:
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        if t.shape[0] != f:
            raise ValueError(f"times must have one entry per frame ({f}), got {t.shape[0]}")
    t = t.astype(np.float32)
    if not np.isfinite(t).all():
        raise ValueError(f"times must be finite, got {t.tolist()}")
    with atomic_open(path, "wb") as fh:
        fh.write(_HEADER.pack(f, a.shape[1]))
        fh.write(t.astype(">f4").tobytes())
        fh.write(a.astype(">f4").tobytes())


def read_mdd(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an MDD file: ``(frames float32 [F, V, 3], times float32 [F])``."""
    with open(path, "rb") as fh:
        raw = fh.read(_HEADER.size)
        if len(raw) < _HEADER.size:
            raise ValueError(f"{str(path)!r} is not an MDD file: shorter than its 8-byte header")
        f, v = _HEADER.unpack(raw)
        if f < 0 or v < 0:
            raise ValueError(f"{str(path)!r}: corrupt MDD header (numFrames={f}, numPoints={v})")
        t = np.fromfile(fh, dtype=">f4", count=f)
        data = np.fromfile(fh, dtype=">f4", count=f * v * 3)
    if t.size != f or data.size != f * v * 3:
        raise ValueError(f"{str(path)!r}: truncated MDD file (header promises {f} frames of {v} points)")
    return data.astype(np.float32).reshape(f, v, 3), t.astype(np.float32)
