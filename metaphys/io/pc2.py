"""PC2 point caches: the vertex-animation format Blender's Mesh Cache modifier reads.

Layout (little endian), as Blender's ``MOD_meshcache_pc2`` reads it::

    char    magic[12]     b"POINTCACHE2\\0"
    int32   version       1
    int32   numPoints     V
    float32 startFrame    first sample's time (Blender's TIME mode reads it in seconds)
    float32 sampleRate    time between samples
    int32   numSamples    F
    float32 xyz[F][V][3]  positions, sample-major

so a cache is exactly ``32 + F*V*12`` bytes. ``start``/``sample_rate`` default to 1.0/1.0, what
Blender's own PC2 exporter writes for a bake starting at frame 1 (start = first frame, rate =
frame step).

Checked with bpy 5.0.1: in the Mesh Cache modifier's default FRAME time mode, scene frame f
shows sample ``f - modifier.frame_start`` (the header's start/rate are ignored), so set
``frame_start`` to the bake's first frame (e.g. 1.0; the modifier's default 0.0 shows sample 1
at frame 1). The vertex order must be the mesh's: ``meshseq.write_rest_obj`` writes the
matching rest mesh (import it with ``up_axis='Z', forward_axis='Y'``).

Writers:

* ``write_pc2`` writes a whole cache atomically.
* ``append_pc2`` extends a cache by rewriting it atomically (simple, O(total) per call).
* ``PC2Writer`` streams frames in place for long bakes: each frame's data is appended and
  fsynced *before* the header's ``numSamples`` is bumped, so the header is the commit point:
  a crash leaves at worst unreferenced bytes after the last counted sample, which readers
  (Blender, ``read_pc2``) ignore and which ``PC2Writer(resume=True)`` truncates.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .atomic import PathLike, atomic_open

__all__ = ["PC2Header", "write_pc2", "read_pc2", "read_pc2_header", "append_pc2", "truncate_pc2",
           "PC2Writer", "check_frames", "PC2_MAGIC", "PC2_HEADER_SIZE"]

PC2_MAGIC = b"POINTCACHE2\0"
_HEADER = struct.Struct("<12siiffi")
PC2_HEADER_SIZE = _HEADER.size  # 32
_NSAMPLES_OFFSET = 28


class PC2Header(NamedTuple):
    version: int
    num_points: int
    start: float
    sample_rate: float
    num_samples: int


def check_frames(frames, name: str = "frames", num_points: int | None = None,
                 frame_offset: int = 0) -> np.ndarray:
    """Return ``frames`` as C-contiguous float32 ``[F, V, 3]``: a single ``[V, 3]`` frame becomes F=1,
    and grid frames ``[F, rows, cols, 3]`` (a stack of ``ClothSim.positions``) become V = rows*cols
    in row-major order, the order of ``ClothSim.field`` and of ``meshseq.write_rest_obj``.

    Raises ValueError for a wrong shape, a V different from ``num_points``, or a non-finite value
    (after the cast to float32, so float64 values beyond float32 range are caught too), naming the
    first bad frame as ``frame_offset + index``.
    """
    a = np.asarray(frames)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4 and a.shape[-1] == 3:  # grid frames: one vertex per grid point, row-major
        a = a.reshape(a.shape[0], -1, 3)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [F, V, 3] (e.g. ClothSim.run(n)), [V, 3] (one frame, e.g. "
                         f"ClothSim.field) or [F, rows, cols, 3] (stacked ClothSim.positions), got "
                         f"{tuple(np.shape(frames))}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one vertex, got shape {a.shape}")
    if num_points is not None and a.shape[1] != num_points:
        raise ValueError(f"{name} has {a.shape[1]} vertices per frame but the cache has {num_points}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        a = np.ascontiguousarray(a, dtype=np.float32)
    finite = np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        v = int(np.argmin(np.isfinite(a[bad]).all(axis=1)))
        raise ValueError(f"{name}: frame {frame_offset + bad} has a non-finite position "
                         f"(vertex {v}: {a[bad, v].tolist()}); nothing was written")
    return a


def _header_bytes(num_points: int, start: float, rate: float, num_samples: int) -> bytes:
    return _HEADER.pack(PC2_MAGIC, 1, int(num_points), float(start), float(rate), int(num_samples))


def _parse_header(raw: bytes, path) -> PC2Header:
    if len(raw) < PC2_HEADER_SIZE:
        raise ValueError(f"{str(path)!r} is not a PC2 file: {len(raw)} bytes, shorter than the header")
    magic, version, v, start, rate, f = _HEADER.unpack(raw[:PC2_HEADER_SIZE])
    if magic != PC2_MAGIC:
        raise ValueError(f"{str(path)!r} is not a PC2 file: magic {magic!r}, expected {PC2_MAGIC!r}")
    if version != 1:
        raise ValueError(f"{str(path)!r}: PC2 version {version}, only version 1 is supported")
    if v < 0 or f < 0:
        raise ValueError(f"{str(path)!r}: corrupt PC2 header (numPoints={v}, numSamples={f})")
    return PC2Header(version, v, start, rate, f)


def read_pc2_header(path: PathLike) -> PC2Header:
    with open(path, "rb") as fh:
        return _parse_header(fh.read(PC2_HEADER_SIZE), path)


def write_pc2(path: PathLike, frames, start: float = 1.0, sample_rate: float = 1.0) -> None:
    """Write ``frames`` ``[F, V, 3]`` (or [F, rows, cols, 3]: ``check_frames``) as a PC2 cache,
    atomically. Values are stored as float32."""
    a = check_frames(frames)
    if not (np.isfinite(start) and np.isfinite(sample_rate)):
        raise ValueError(f"start and sample_rate must be finite, got {start}, {sample_rate}")
    with atomic_open(path, "wb") as fh:
        fh.write(_header_bytes(a.shape[1], start, sample_rate, a.shape[0]))
        fh.write(a.astype("<f4", copy=False).tobytes())


def read_pc2(path: PathLike) -> tuple[np.ndarray, float, float]:
    """Read a PC2 cache: ``(frames float32 [F, V, 3], start, sample_rate)``.

    Bytes after the last counted sample (an interrupted ``PC2Writer``) are ignored.
    """
    with open(path, "rb") as fh:
        h = _parse_header(fh.read(PC2_HEADER_SIZE), path)
        n = h.num_samples * h.num_points * 3
        data = np.fromfile(fh, dtype="<f4", count=n)
    if data.size != n:
        raise ValueError(f"{str(path)!r}: truncated PC2 file, header promises {h.num_samples} samples of "
                         f"{h.num_points} points but only {data.size * 4} data bytes follow")
    return data.astype(np.float32).reshape(h.num_samples, h.num_points, 3), h.start, h.sample_rate


def append_pc2(path: PathLike, frames, start: float = 1.0, sample_rate: float = 1.0) -> int:
    """Append ``frames`` to the cache at ``path`` (created with start/sample_rate if missing).

    Rewrites the whole file atomically; returns the new number of samples. For long bakes
    prefer ``PC2Writer``, which appends in place.
    """
    if not Path(path).exists():
        a = check_frames(frames)
        write_pc2(path, a, start, sample_rate)
        return a.shape[0]
    old, start0, rate0 = read_pc2(path)
    a = check_frames(frames, num_points=old.shape[1], frame_offset=old.shape[0])
    write_pc2(path, np.concatenate([old, a]), start0, rate0)
    return old.shape[0] + a.shape[0]


def truncate_pc2(path: PathLike, num_samples: int) -> None:
    """Cut the cache at ``path`` to its first ``num_samples`` samples (resume to a manifest's frame count).

    Rewrites the header count first, then drops the bytes beyond it, so a crash in between
    leaves a valid cache of ``num_samples`` samples plus ignorable trailing bytes.
    """
    h = read_pc2_header(path)
    if not 0 <= num_samples <= h.num_samples:
        raise ValueError(f"num_samples must be in [0, {h.num_samples}] for {str(path)!r}, got {num_samples}")
    with open(path, "r+b") as fh:
        fh.seek(_NSAMPLES_OFFSET)
        fh.write(struct.pack("<i", num_samples))
        fh.flush()
        os.fsync(fh.fileno())
        fh.truncate(PC2_HEADER_SIZE + num_samples * h.num_points * 12)
        fh.flush()
        os.fsync(fh.fileno())


class PC2Writer:
    """Stream frames into a PC2 cache in place; resumable.

    ``PC2Writer(path, num_points)`` creates a new empty cache (atomically, replacing any old
    one) unless ``resume=True`` and a cache exists, in which case it checks ``num_points``,
    drops uncounted trailing bytes and continues after the last counted sample (pass
    ``keep=n`` to keep only the first n samples, e.g. the manifest's ``frames_done``).

    Every ``write``/``write_frame`` is durable when it returns: data fsynced, then the header
    count updated and fsynced. Use as a context manager or call ``close()``.
    """

    def __init__(self, path: PathLike, num_points: int, start: float = 1.0, sample_rate: float = 1.0,
                 resume: bool = False, keep: int | None = None):
        self.path = Path(path)
        if int(num_points) < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.num_points = int(num_points)
        if resume and self.path.exists():
            h = read_pc2_header(self.path)
            if h.num_points != self.num_points:
                raise ValueError(f"cannot resume {str(self.path)!r}: it has {h.num_points} points per "
                                 f"sample, the writer was given {self.num_points}")
            n = h.num_samples if keep is None else int(keep)
            size = os.path.getsize(self.path)
            have = (size - PC2_HEADER_SIZE) // (self.num_points * 12)
            if n > min(h.num_samples, have):
                raise ValueError(f"cannot keep {n} samples of {str(self.path)!r}: it holds {h.num_samples}")
            truncate_pc2(self.path, n)
            self.start, self.sample_rate, self.num_samples = h.start, h.sample_rate, n
        else:
            if keep not in (None, 0):
                raise ValueError(f"cannot keep {keep} samples of {str(self.path)!r}: "
                                 + ("it does not exist" if resume else "keep needs resume=True"))
            with atomic_open(self.path, "wb") as fh:
                fh.write(_header_bytes(self.num_points, start, sample_rate, 0))
            self.start, self.sample_rate, self.num_samples = float(start), float(sample_rate), 0
        self._fh = open(self.path, "r+b")
        self._fh.seek(0, os.SEEK_END)

    @property
    def frames_written(self) -> int:
        return self.num_samples

    def write(self, frames) -> int:
        """Append ``frames`` ``[F, V, 3]`` (or one ``[V, 3]``); returns the new sample count."""
        if self._fh is None:
            raise ValueError(f"PC2Writer for {str(self.path)!r} is closed")
        a = check_frames(frames, num_points=self.num_points, frame_offset=self.num_samples)
        fh = self._fh
        fh.seek(PC2_HEADER_SIZE + self.num_samples * self.num_points * 12)
        fh.write(a.astype("<f4", copy=False).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(_NSAMPLES_OFFSET)
        fh.write(struct.pack("<i", self.num_samples + a.shape[0]))
        fh.flush()
        os.fsync(fh.fileno())
        self.num_samples += a.shape[0]
        return self.num_samples

    write_frame = write

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "PC2Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
