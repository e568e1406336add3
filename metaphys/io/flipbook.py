"""Game flipbooks of 2D smoke: sprite sheets with the channels Unity and Unreal use (numpy in, PNG out).

``write_game_flipbook`` takes per-frame density, temperature and motion (cells per sheet frame) and
writes, atomically, in one folder:

* ``flipbook_color.png``    RGBA 8-bit. A = density / ``density_max``; RGB = the smoke colour
  (white), multiplied by A when ``alpha="premultiplied"`` (for ``One, OneMinusSrcAlpha`` blending),
  left as is when ``alpha="straight"`` (for ``SrcAlpha, OneMinusSrcAlpha``, Unity's "Alpha Blended"
  and Unreal's "Translucent").
* ``flipbook_emissive.png`` gray 8-bit: temperature / ``temperature_max`` (all zero without heat).
* ``flipbook_motion.png``   RGB 8- or 16-bit motion vectors (B = 0), see below.
* ``flipbook_normal.png``   RGB 8-bit tangent-space normals of the density as a height field.
* ``flipbook.json``         the sidecar: layout, channels, scales, alpha mode, loop blend.
* ``flipbook_preview.gif``  the sheet played back with motion-vector blending (4 in-betweens per frame).

Layout. ``rows`` x ``cols`` cells, frame k in cell row ``k // cols``, column ``k % cols`` (left to
right, then top to bottom: frame 0 top-left), the order of Unity's Texture Sheet Animation / VFX
Graph flipbooks and of Unreal's SubUV. Cells past the last frame are empty (transparent, zero
motion, flat normal). Each cell is ``cell_height`` x ``cell_width`` pixels resampled from the grid.

Motion vectors (``flipbook_motion.png``). Pixel (R, G) holds the 2D displacement m from frame k to
frame k+1 in units of one cell's UV (1 = a whole cell), encoded as ``R = 0.5 + 0.5 * m_u / scale``
and ``G = 0.5 + 0.5 * m_v / scale`` (so 0.5, i.e. 128 or 32768, is no motion); ``scale`` is the
sidecar's ``motion.scale``. m is the backward (semi-Lagrangian) displacement: what frame k+1 shows at
``uv`` was at ``uv - m(uv)`` in frame k. This is what Unity's VFX Graph "Flipbook Motion Blend"
UV mode samples: it decodes ``rg * 2 - 1``, multiplies by its *Motion Vector Scale* (set it to the
sidecar's ``motion.scale``) and by 1 / flipbook size, samples frame k at ``uv - blend * m_k`` and frame
k+1 at ``uv + (1 - blend) * m_(k+1)``, and blends the two by ``blend``. ``engine="unity"`` writes v
pointing up (Unity's UV origin is bottom-left); ``engine="unreal"`` writes v pointing down (Unreal's
texture V runs from the top), which is the only difference for Unreal's flipbook motion-vector
material functions: decode ``rg * 2 - 1``, multiply by the strength ``motion.scale``. Import the
motion sheet as linear data (sRGB off; Unreal: compression "VectorDisplacementmap" or "HDR", no
compression artefacts), the normal sheet as a normal map.

Normals (``flipbook_normal.png``). The density is a height field ``h = normal_strength * density /
density_max`` in cell widths; the tangent-space normal is ``normalize(-dh/du, -dh/dv, 1)``, stored as
``(n + 1) / 2``; v up (OpenGL / Unity) or v down (DirectX / Unreal) with ``engine``.

Seamless loops (``loop = L``, ``loop_mode``; docs/flipbooks.md compares them on a baked plume).

* ``"crossfade"``: the last L of the N selected frames are crossfaded into the first L: the sheet
  holds M = N - L frames, ``G_i = F_(M+i) + w_i * (F_i - F_(M+i))`` for i < L with
  ``w_i = smoothstep((i + 1) / (L + 1))`` and ``G_i = F_i`` otherwise (each channel, the motion
  too). Frame M-1 is followed by G_0, mostly F_M: the seam is the natural step F_(M-1) -> F_M, the
  last of the range, which is the largest one while the smoke still speeds up.
* ``"two_phase"``: the sheet blends the N selected frames with themselves half a loop later (the
  two-phase blend of game flow maps: two copies of a cycle offset by half a period, each weighted
  zero where it restarts): ``G_j = w_j F_j + (1 - w_j) F_((j + h) mod N)``, h = N // 2, with
  ``w_j = smoothstep(min(r_j / L, 1))`` and r_j = min(j, N - j) the frames between j and the seam
  (1 <= L <= h). Phase A (F_j) restarts at the seam, where its weight is 0 (and flat); phase B
  restarts at j = h, where its weight is 0. So the seam step is phase B's natural step from the
  middle of the range (a typical one, not the last), the crossfades (between frames h apart) sit
  in the L frames on each side of the seam, the frames between show F_j alone, and the sheet holds
  all N frames: a loop costs no extra simulated frames.

``loop_seam`` measures the seam against consecutive frames.
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .atomic import PathLike, atomic_open, atomic_write_text

__all__ = ["ENGINES", "ALPHA_MODES", "LOOP_MODES", "FILES", "loop_extra_frames", "loop_two_phase", "select_frames", "resize", "motion_from_velocity", "warp",
           "loop_blend", "loop_seam", "encode_unit", "decode_unit", "encode_motion", "decode_motion",
           "normal_map", "write_png", "read_png", "write_game_flipbook", "read_sidecar", "read_flipbook",
           "blend_frame"]

ENGINES = ("unity", "unreal")
ALPHA_MODES = ("straight", "premultiplied")
LOOP_MODES = ("crossfade", "two_phase")
# channel -> file name (in the bake folder)
FILES = {"color": "flipbook_color.png", "emissive": "flipbook_emissive.png", "motion": "flipbook_motion.png",
         "normal": "flipbook_normal.png", "sidecar": "flipbook.json", "preview": "flipbook_preview.gif"}
PREVIEW_STEPS = 4          # in-betweens per sheet frame in the preview GIF
PREVIEW_MAX_FPS = 50.0     # browsers play GIF frames faster than 50 per second at 10 per second
PREVIEW_MAX_CELL = 256     # the preview's cells are at most this many pixels wide


# ---- frame selection --------------------------------------------------------------------------------
def select_frames(available: int, cells: int, step: Optional[int] = None, first: int = 0,
                  last: Optional[int] = None, loop: int = 0) -> list:
    """Indices (into ``available`` frames) of the frames a sheet of ``cells`` cells is made from:
    every ``step``-th frame of ``first..last`` (inclusive), at most ``cells + loop`` of them (the loop's
    crossfade consumes ``loop`` frames). ``step=None``: the smallest step that fits the range."""
    if available < 1:
        raise ValueError("no frames to make a flipbook of")
    last = available - 1 if last is None else int(last)
    first = int(first)
    if not 0 <= first <= last < available:
        raise ValueError(f"frame range {first}..{last} is not within the {available} frames baked")
    n = last - first + 1
    need = int(cells) + int(loop)
    if step is None:
        step = max(1, -(-n // need))
    if int(step) < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    return list(range(first, last + 1, int(step)))[:need]


# ---- resampling and warping -----------------------------------------------------------------------
def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of a triangle (linear) filter as wide as the output pixel when shrinking
    (area-like, no aliasing) and plain linear interpolation when enlarging; rows sum to 1."""
    scale = n_in / n_out
    width = max(1.0, scale)
    centres = (np.arange(n_out) + 0.5) * scale - 0.5     # output pixel centres in input pixel units
    x = np.arange(n_in)[None, :]
    w = np.clip(1.0 - np.abs(x - centres[:, None]) / width, 0.0, None)
    if not (w.sum(1) > 0).all():  # cannot happen for width >= 1, kept as a guard
        raise ValueError("resampling left an output pixel without input")
    return w / w.sum(1, keepdims=True)


def resize(img, shape) -> np.ndarray:
    """Resample ``img`` ``[..., H, W]`` or ``[H, W, C]``-free layouts: the last two axes go to ``shape``."""
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape[-2:]
    if (h, w) == tuple(shape):
        return a.copy()
    ry, rx = _resample_matrix(h, int(shape[0])), _resample_matrix(w, int(shape[1]))
    return np.einsum("ih,...hw,jw->...ij", ry, a, rx, optimize=True)


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``img`` ``[H, W]`` or ``[C, H, W]`` at fractional (row, col) positions, clamped to the edges."""
    h, w = img.shape[-2:]
    y = np.clip(y, 0.0, h - 1.0)
    x = np.clip(x, 0.0, w - 1.0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros(y.shape, np.int64)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros(x.shape, np.int64)
    fy, fx = y - y0, x - x0
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    return ((img[..., y0, x0] * (1 - fx) + img[..., y0, x1] * fx) * (1 - fy)
            + (img[..., y1, x0] * (1 - fx) + img[..., y1, x1] * fx) * fy)


def warp(img, motion, t: float = 1.0) -> np.ndarray:
    """``img`` ``[H, W]`` (or ``[C, H, W]``) sampled at ``p - t * motion(p)``: with the backward
    displacement of frame k (``motion`` ``[H, W, 2]``, (d_col, d_row) in pixels), ``warp(F_k, m_k)``
    predicts frame k+1; ``t`` in (0, 1) gives the in-betweens (the engines' blend)."""
    a = np.asarray(img, dtype=np.float64)
    m = np.asarray(motion, dtype=np.float64)
    h, w = a.shape[-2:]
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return _bilinear(a, rows - t * m[..., 1], cols - t * m[..., 0])


def motion_from_velocity(velocities: Sequence[np.ndarray], start: int, end: int, max_cells: float = 0.5) -> np.ndarray:
    """Backward displacement (pixels of the grid, ``[H, W, 2]`` as (d_col, d_row), rows down) that
    carries frame ``start`` to frame ``end``: from each point, trace back through the velocities of the
    frames between (``velocities[j]`` ``[H, W, 2]`` in cells per frame, (col, row) components, at the
    end of frame j; during frame j the flow is the mean of frames j-1 and j), in sub-steps of at most
    ``max_cells`` cells (midpoint rule). ``end == start`` gives zero motion; past the last velocity
    the last one holds."""
    v0 = np.asarray(velocities[start], dtype=np.float64)
    h, w = v0.shape[:2]
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    y, x = rows.copy(), cols.copy()
    last = len(velocities) - 1
    for j in range(end, start, -1):        # frame j carries frame j-1 to frame j
        vj = 0.5 * (np.asarray(velocities[min(j, last)], dtype=np.float64)
                    + np.asarray(velocities[min(j - 1, last)], dtype=np.float64))
        field = np.moveaxis(vj, -1, 0)      # [2, H, W]
        n = max(1, math.ceil(float(np.abs(vj).max(initial=0.0)) / max_cells))
        dt = 1.0 / n
        for _ in range(n):
            vx, vy = _bilinear(field, y, x)
            vxm, vym = _bilinear(field, y - 0.5 * dt * vy, x - 0.5 * dt * vx)
            x, y = x - dt * vxm, y - dt * vym
    return np.stack([cols - x, rows - y], axis=-1)


# ---- loops ----------------------------------------------------------------------------------------
def _smoothstep(t):
    return t * t * (3.0 - 2.0 * t)


def loop_blend(frames: np.ndarray, loop: int, mode: str = "crossfade") -> np.ndarray:
    """The looping sheet of ``frames`` ``[N, ...]`` (module docstring): ``crossfade`` the last ``loop``
    frames into the first (returns ``[N - loop, ...]``), or ``two_phase`` with ``loop``-frame ramps
    (returns ``[N, ...]``). ``loop = 0``: the frames as they are."""
    a = np.asarray(frames, dtype=np.float64)
    n, loop = a.shape[0], int(loop)
    if mode not in LOOP_MODES:
        raise ValueError(f"loop mode must be one of {LOOP_MODES}, got {mode!r}")
    if loop <= 0:
        return a.copy()
    if 2 * loop > n:
        raise ValueError(f"a {mode} loop of {loop} frames needs at least {2 * loop} frames, got {n}")
    if mode == "two_phase":
        return loop_two_phase(a, loop)
    m = n - loop
    out = a[:m].copy()
    for i in range(loop):
        wi = _smoothstep((i + 1) / (loop + 1))
        out[i] = a[m + i] + wi * (a[i] - a[m + i])
    return out


def loop_two_phase(frames: np.ndarray, ramp: int) -> np.ndarray:
    """``frames`` ``[N, ...]`` blended with themselves N // 2 frames later, the weight of F_j ramping
    (smoothstep over ``ramp`` frames) from 0 at the seam to 1 (module docstring); ``[N, ...]``."""
    a = np.asarray(frames, dtype=np.float64)
    n, ramp = a.shape[0], int(ramp)
    h = n // 2
    if not 1 <= ramp <= h:
        raise ValueError(f"a two_phase loop of {n} frames takes ramps of 1..{h} frames, got {ramp}")
    out = np.empty_like(a)
    for j in range(n):
        w = _smoothstep(min(min(j, n - j) / ramp, 1.0))
        out[j] = w * a[j] + (1.0 - w) * a[(j + h) % n]
    return out


def loop_extra_frames(loop: int, mode: str = "crossfade") -> int:
    """Frames a loop consumes beyond the sheet's: ``loop`` for a crossfade, none for two_phase."""
    if mode not in LOOP_MODES:
        raise ValueError(f"loop mode must be one of {LOOP_MODES}, got {mode!r}")
    return int(loop) if mode == "crossfade" else 0


def loop_seam(frames) -> dict:
    """Mean absolute differences of a looping sequence ``[M, ...]``: ``seam`` (last -> first) and the
    consecutive pairs' ``mean``, ``median`` and ``max`` (first -> second ... )."""
    a = np.asarray(frames, dtype=np.float64)
    steps = [float(np.abs(a[k + 1] - a[k]).mean()) for k in range(len(a) - 1)]
    return {"seam": float(np.abs(a[0] - a[-1]).mean()), "mean": float(np.mean(steps)),
            "median": float(np.median(steps)), "max": float(np.max(steps))}


# ---- channel encodings ----------------------------------------------------------------------------
def _maxval(bits: int) -> int:
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    return (1 << bits) - 1


def encode_unit(x, bits: int = 8) -> np.ndarray:
    """[0, 1] -> uint8/uint16 ``round(x * maxval)`` (clipped)."""
    mv = _maxval(bits)
    return np.rint(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * mv).astype(np.uint8 if bits == 8 else np.uint16)


def decode_unit(px) -> np.ndarray:
    p = np.asarray(px)
    return p.astype(np.float64) / (255.0 if p.dtype == np.uint8 else 65535.0)


def encode_motion(m_uv, scale: float, bits: int = 16) -> np.ndarray:
    """Motion ``[..., 2]`` in cell-UV units -> RGB ``[..., 3]`` with R, G = 0.5 + 0.5 * m / scale, B = 0."""
    m = np.asarray(m_uv, dtype=np.float64)
    rg = encode_unit(0.5 + 0.5 * m / float(scale), bits)
    return np.concatenate([rg, np.zeros(rg.shape[:-1] + (1,), rg.dtype)], axis=-1)


def decode_motion(px, scale: float) -> np.ndarray:
    """RGB(A) motion pixels -> cell-UV motion ``[..., 2]``: ``(rg * 2 - 1) * scale`` (as the engines decode)."""
    return (decode_unit(px)[..., :2] * 2.0 - 1.0) * float(scale)


def normal_map(height, strength: float, engine: str = "unity") -> np.ndarray:
    """Tangent-space normals ``[H, W, 3]`` of the height field ``strength * height`` (``height`` ``[H, W]``
    in [0, 1], heights in cell widths, the cell ``W`` pixels wide); v up for unity, down for unreal."""
    h = np.asarray(height, dtype=np.float64) * float(strength)
    rows, cols = h.shape
    dh_dx = np.gradient(h, axis=1) * cols          # per cell width
    dh_drow = np.gradient(h, axis=0) * cols
    dh_dv = -dh_drow if engine == "unity" else dh_drow   # v up (rows run down) for unity
    n = np.stack([-dh_dx, -dh_dv, np.ones_like(h)], axis=-1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


# ---- PNG (8/16-bit, 1-4 channels; Pillow writes 16-bit gray only) ------------------------------------
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(px: np.ndarray, level: int = 6) -> bytes:
    """PNG of ``px`` ``[H, W]`` or ``[H, W, C]`` (C = 1..4: gray, gray+alpha, RGB, RGBA), uint8 or uint16."""
    a = np.asarray(px)
    if a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG pixels must be uint8 or uint16, got {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in _COLOR_TYPE or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"PNG pixels must be [H, W] or [H, W, 1..4], got shape {a.shape}")
    h, w, c = a.shape
    bits = 8 if a.dtype == np.uint8 else 16
    raw = np.ascontiguousarray(a.astype(">u2") if bits == 16 else a).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([np.zeros((h, 1), np.uint8), raw], axis=1)  # filter type 0 (None) per row
    ihdr = struct.pack(">IIBBBBB", w, h, bits, _COLOR_TYPE[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _chunk(b"IEND", b""))


def write_png(path: PathLike, px: np.ndarray, level: int = 6) -> None:
    """Write ``px`` (see ``png_bytes``) as a PNG, atomically."""
    data = png_bytes(px, level)
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def read_png(path: PathLike) -> np.ndarray:
    """Read a PNG as uint8/uint16 ``[H, W, C]`` with its own bit depth (16-bit RGB kept, unlike Pillow)."""
    from PIL import Image

    with open(path, "rb") as fh:
        data = fh.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{str(path)!r} is not a PNG")
    w, h, bits, ctype = struct.unpack(">IIBB", data[16:26])
    if bits == 16:
        pos, idat = 8, b""
        while pos < len(data):
            n, tag = struct.unpack(">I4s", data[pos:pos + 8])
            if tag == b"IDAT":
                idat += data[pos + 8:pos + 8 + n]
            pos += 12 + n
        c = {v: k for k, v in _COLOR_TYPE.items()}[ctype]
        raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * c * 2)
        if (raw[:, 0] != 0).any():
            raise ValueError(f"{str(path)!r}: 16-bit PNG rows with filters other than None are not supported")
        return raw[:, 1:].copy().view(">u2").astype(np.uint16).reshape(h, w, c)
    with Image.open(path) as img:
        img.load()
        a = np.asarray(img)
    return a[..., None] if a.ndim == 2 else a


# ---- the sheets -----------------------------------------------------------------------------------
def _tile(frames: np.ndarray, rows: int, cols: int, fill) -> np.ndarray:
    """``frames`` ``[F, h, w, C]`` -> sheet ``[rows * h, cols * w, C]``; empty cells hold ``fill``."""
    f, h, w, c = frames.shape
    sheet = np.empty((rows, cols, h, w, c), dtype=frames.dtype)
    sheet[...] = np.asarray(fill, dtype=frames.dtype)
    flat = sheet.reshape(rows * cols, h, w, c)
    flat[:f] = frames
    return sheet.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def _untile(sheet: np.ndarray, rows: int, cols: int, frames: int) -> np.ndarray:
    a = sheet if sheet.ndim == 3 else sheet[..., None]
    h, w = a.shape[0] // rows, a.shape[1] // cols
    return a.reshape(rows, h, cols, w, a.shape[2]).transpose(0, 2, 1, 3, 4).reshape(rows * cols, h, w, -1)[:frames]


def _nice_ceil(x: float) -> float:
    """``x`` rounded up to 3 significant digits (a scale artists can type)."""
    if x <= 0:
        return 1.0
    e = math.floor(math.log10(x)) - 2
    return math.ceil(x / 10 ** e - 1e-9) * 10 ** e


def cell_shape(grid_shape, cell: Optional[int]) -> tuple:
    """(height, width) of a cell: the grid's own, or ``cell`` pixels along the grid's longer side."""
    h, w = int(grid_shape[0]), int(grid_shape[1])
    if cell is None:
        return h, w
    s = int(cell) / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def write_game_flipbook(out_dir: PathLike, density, motion, temperature=None, *, rows: int = 8, cols: int = 8,
                        cell: Optional[int] = None, loop: int = 0, loop_mode: str = "crossfade",
                        alpha: str = "straight", engine: str = "unity",
                        motion_bits: int = 16, motion_scale: Optional[float] = None, normal_strength: float = 0.05,
                        fps: float = 24.0, source_frames: Optional[Sequence[int]] = None, preview: bool = True,
                        color=(1.0, 1.0, 1.0)) -> dict:
    """Write the sheets, sidecar and preview (module docstring) into ``out_dir``; returns the sidecar dict.

    ``density``, ``temperature`` ``[N, H, W]`` (row 0 = top of the domain) and ``motion`` ``[N, H, W, 2]``
    (backward displacement to the next selected frame, (d_col, d_row) grid cells) of the N selected
    frames; with ``loop_mode="crossfade"`` ``loop`` of them are crossfaded away, so the sheet shows
    N - loop <= rows * cols frames; ``"two_phase"`` keeps all N (``loop`` = its ramps' length).
    ``fps`` is the sheet's playback rate, ``source_frames`` the bake frame numbers (for the sidecar).
    """
    d = np.asarray(density, dtype=np.float64)
    if d.ndim != 3 or d.shape[0] < 1:
        raise ValueError(f"density must be [frames, H, W], got shape {d.shape}")
    n, gh, gw = d.shape
    t = np.zeros_like(d) if temperature is None else np.asarray(temperature, dtype=np.float64)
    m = np.asarray(motion, dtype=np.float64)
    if t.shape != d.shape or m.shape != d.shape + (2,):
        raise ValueError(f"temperature {t.shape} and motion {m.shape} must match density {d.shape} (+ 2)")
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    for name, arr in (("density", d), ("temperature", t), ("motion", m)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} has non-finite values")
    rows, cols, loop = int(rows), int(cols), int(loop)
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got {rows} x {cols}")
    if loop_mode not in LOOP_MODES:
        raise ValueError(f"loop_mode must be one of {LOOP_MODES}, got {loop_mode!r}")
    frames = n - loop_extra_frames(loop, loop_mode)
    if loop < 0 or frames < 1 or (loop and 2 * loop > n):
        raise ValueError(f"loop must be in [0, {n // 2}] for {n} frames, got {loop}")
    if frames > rows * cols:
        raise ValueError(f"{frames} frames do not fit a {rows} x {cols} sheet")
    ch, cw = cell_shape((gh, gw), cell)

    # motion in cell-UV units (u right; v up for unity, down for unreal), then everything per cell
    sign_v = -1.0 if engine == "unity" else 1.0
    m_uv = np.stack([m[..., 0] / gw, sign_v * m[..., 1] / gh], axis=-1)
    d_c = np.clip(resize(loop_blend(d, loop, loop_mode), (ch, cw)), 0.0, None)
    t_c = np.clip(resize(loop_blend(t, loop, loop_mode), (ch, cw)), 0.0, None)
    m_c = np.moveaxis(resize(np.moveaxis(loop_blend(m_uv, loop, loop_mode), -1, 1), (ch, cw)), 1, -1)
    density_max = float(d_c.max(initial=0.0))
    temperature_max = float(t_c.max(initial=0.0))
    a = d_c / density_max if density_max > 0 else np.zeros_like(d_c)
    e = t_c / temperature_max if temperature_max > 0 else np.zeros_like(t_c)
    scale = float(motion_scale) if motion_scale is not None else _nice_ceil(float(np.abs(m_c).max(initial=0.0)))

    rgb = np.broadcast_to(np.clip(np.asarray(color, dtype=np.float64), 0, 1), a.shape + (3,))
    if alpha == "premultiplied":
        rgb = rgb * a[..., None]
    color_px = encode_unit(np.concatenate([rgb, a[..., None]], axis=-1), 8)
    emissive_px = encode_unit(e[..., None], 8)
    motion_px = encode_motion(m_c, scale, motion_bits)
    normals = np.stack([normal_map(a[k], normal_strength, engine) for k in range(frames)])
    normal_px = encode_unit(0.5 * (normals + 1.0), 8)

    out = Path(out_dir)
    neutral = (1 << (motion_bits - 1))
    write_png(out / FILES["color"], _tile(color_px, rows, cols, 0))
    write_png(out / FILES["emissive"], _tile(emissive_px, rows, cols, 0)[..., 0])
    write_png(out / FILES["motion"], _tile(motion_px, rows, cols, (neutral, neutral, 0)), level=1)
    write_png(out / FILES["normal"], _tile(normal_px, rows, cols, (128, 128, 255)))
    layout = {
        "format": "metaphys game flipbook 1",
        "rows": rows, "columns": cols, "frames": frames, "cell_width": cw, "cell_height": ch,
        "width": cols * cw, "height": rows * ch, "fps": float(fps), "engine": engine,
        "order": "row-major: left to right, then top to bottom; frame 0 top-left",
        "images": {k: FILES[k] for k in ("color", "emissive", "motion", "normal")},
        "alpha_mode": alpha,
        "channels": {
            "color": {"file": FILES["color"], "bits": 8, "alpha": "density / density_max",
                      "rgb": "smoke colour" + (" x alpha (premultiplied)" if alpha == "premultiplied" else
                                               " (straight alpha)"),
                      "smoke_color": [float(v) for v in np.clip(np.asarray(color, dtype=np.float64), 0, 1)]},
            "emissive": {"file": FILES["emissive"], "bits": 8, "value": "temperature / temperature_max"},
            "motion": {"file": FILES["motion"], "bits": int(motion_bits), "scale": scale,
                       "encoding": "R = 0.5 + 0.5 * u / scale, G = 0.5 + 0.5 * v / scale, B = 0; decode "
                                   "(rg * 2 - 1) * scale = displacement in cell UV (1 = one cell) from frame k "
                                   "to k+1, backward: frame k+1 at uv shows frame k at uv - m(uv)",
                       "v_axis": "up (Unity UV)" if engine == "unity" else "down (Unreal UV)",
                       "linear": True},
            "normal": {"file": FILES["normal"], "bits": 8, "space": "tangent", "strength": float(normal_strength),
                       "encoding": "(n + 1) / 2 of normalize(-dh/du, -dh/dv, 1), h = strength * alpha in cell widths",
                       "green": "+v up (OpenGL, Unity)" if engine == "unity" else "+v down (DirectX, Unreal)"},
        },
        "density_max": density_max, "temperature_max": temperature_max,
        "motion_scale": scale,
        "loop": _loop_facts(loop, loop_mode),
        "source_frames": None if source_frames is None else [int(s) for s in source_frames],
        "preview": FILES["preview"] if preview else None,
    }
    if preview:
        write_preview(out / FILES["preview"], color_px, emissive_px, motion_px, scale, engine, fps, looped=loop > 0)
    atomic_write_text(out / FILES["sidecar"], json.dumps(layout, sort_keys=True, indent=2, allow_nan=False) + "\n")
    return layout


def _loop_facts(loop: int, mode: str) -> dict:
    """The sidecar's ``loop`` entry: how the sheet was made to loop (module docstring)."""
    if mode == "two_phase":
        return {"mode": mode, "frames": loop, "curve": "smoothstep",
                "formula": "G_j = w_j F_j + (1 - w_j) F_((j + h) mod N), h = N // 2, "
                           "w_j = smoothstep(min(min(j, N - j) / L, 1)); the sheet holds all N selected frames; "
                           "seam = phase B's step F_(h-1) -> F_h"}
    return {"mode": mode, "frames": loop, "curve": "smoothstep",
            "formula": "G_i = F_(M+i) + w_i (F_i - F_(M+i)), w_i = smoothstep((i+1)/(L+1)), i < L; M = N - L"}


def read_sidecar(path: PathLike) -> dict:
    """The sidecar of a game flipbook (the JSON file, or the folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / FILES["sidecar"]
    with open(p, encoding="utf-8") as fh:
        return json.load(fh)


def read_flipbook(folder: PathLike) -> Dict[str, np.ndarray]:
    """Decode the sheets of ``folder`` back to per-frame values: ``alpha``, ``density`` (alpha x
    density_max), ``rgb``, ``emissive`` (temperature / temperature_max), ``motion`` (cell UV, the
    sidecar's v axis) and ``normal`` (unit vectors), each ``[frames, cell_height, cell_width, ...]``."""
    layout = read_sidecar(folder)
    r, c, f = layout["rows"], layout["columns"], layout["frames"]
    img = {k: read_png(Path(folder) / name) for k, name in layout["images"].items()}
    col = _untile(img["color"], r, c, f)
    out = {"alpha": decode_unit(col[..., 3]), "rgb": decode_unit(col[..., :3]),
           "emissive": decode_unit(_untile(img["emissive"], r, c, f)[..., 0]),
           "motion": decode_motion(_untile(img["motion"], r, c, f), layout["motion_scale"]),
           "normal": decode_unit(_untile(img["normal"], r, c, f)) * 2.0 - 1.0}
    out["density"] = out["alpha"] * layout["density_max"]
    return out


# ---- playback with motion-vector blending (the engines' formula) ------------------------------------
def blend_frame(img0, img1, mv0, mv1, blend: float) -> np.ndarray:
    """In-between of frames k (``img0``) and k+1 (``img1``) ``[C, h, w]`` at ``blend`` in [0, 1), with
    their motion ``mv0``, ``mv1`` ``[h, w, 2]`` in PIXELS (d_col, d_row, rows down): frame k sampled at
    ``p - blend * mv0``, frame k+1 at ``p + (1 - blend) * mv1``, mixed by ``blend`` (Unity VFX Graph's
    Flipbook Motion Blend, in pixel units)."""
    a = warp(img0, mv0, blend)
    b = warp(img1, mv1, -(1.0 - blend))
    return (1.0 - blend) * a + blend * b


def _palette_frame(alpha: np.ndarray, emissive: np.ndarray) -> np.ndarray:
    """Palette indices (16 smoke levels x 16 glow levels) of the preview's composite over dark grey."""
    qa = np.clip(np.rint(alpha * 15), 0, 15).astype(np.uint8)
    qe = np.clip(np.rint(emissive * 15), 0, 15).astype(np.uint8)
    return qa * 16 + qe


def _palette() -> list:
    pal = []
    bg, smoke, glow = np.array([24.0, 24, 28]), np.array([235.0, 235, 235]), np.array([255.0, 140, 30])
    for ia in range(16):
        for ie in range(16):
            a, e = ia / 15, ie / 15
            rgb = np.clip(bg * (1 - a) + smoke * a * (1 - 0.6 * e) + glow * e, 0, 255)
            pal.extend(int(round(v)) for v in rgb)
    return pal


def write_preview(path: PathLike, color_px, emissive_px, motion_px, scale: float, engine: str, fps: float,
                  looped: bool, steps: int = PREVIEW_STEPS) -> None:
    """The sheet's frames (as encoded: what an engine reads) played with motion-vector blending,
    ``steps`` in-betweens per frame, as a GIF at min(steps x fps, 50) frames per second."""
    from PIL import Image

    f, h, w = color_px.shape[:3]
    shrink = max(1, math.ceil(max(h, w) / PREVIEW_MAX_CELL))
    ph, pw = -(-h // shrink), -(-w // shrink)
    planes = np.stack([decode_unit(color_px[..., 3]), decode_unit(emissive_px[..., 0])], axis=1)  # [F, 2, h, w]
    mv = decode_motion(motion_px, scale)                                                        # cell UV
    if engine == "unity":
        mv = mv * np.array([1.0, -1.0])                    # v up -> rows down
    if shrink > 1:
        planes = resize(planes, (ph, pw))
        mv = np.moveaxis(resize(np.moveaxis(mv, -1, 1), (ph, pw)), 1, -1)
    mv_px = mv * np.array([pw, ph], dtype=np.float64)      # cell UV -> preview pixels
    images = []
    pal = _palette()
    last = f if looped else f - 1
    for k in range(max(last, 1)):
        k1 = (k + 1) % f
        for s in range(steps if f > 1 else 1):
            b = s / steps
            frame = planes[k] if b == 0 else blend_frame(planes[k], planes[k1], mv_px[k], mv_px[k1], b)
            img = Image.fromarray(_palette_frame(frame[0], frame[1]), mode="P")
            img.putpalette(pal)
            images.append(img)
    if not looped and f > 1:
        img = Image.fromarray(_palette_frame(planes[-1][0], planes[-1][1]), mode="P")
        img.putpalette(pal)
        images.append(img)
    rate = min(steps * float(fps), PREVIEW_MAX_FPS)
    duration = max(20, int(round(1000.0 / rate / 10.0)) * 10)
    import io as _io
    buf = _io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                   optimize=False, disposal=1)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())
