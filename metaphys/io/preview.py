"""Quick GIF previews of bakes: colormapped smoke density and a wireframe projection of cloth.

Fast by construction (palette images drawn with Pillow, no matplotlib unless a colormap name
outside the built-in ones is asked for): 50 frames of 64x64 density or a 32x32 cloth take a
fraction of a second.

Note: Pillow merges *identical consecutive* frames into one GIF frame with the summed duration,
so playback timing is right but a GIF of a static stretch has fewer frames than were given.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from .atomic import PathLike, atomic_open

__all__ = ["colormap_lut", "density_gif", "cloth_gif", "write_gif", "project_cloth", "gif_frame_count"]

# Anchor colors of matplotlib's perceptually uniform maps at t = 0, 1/8, ..., 1.
_ANCHORS = {
    "inferno": [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85), (227, 89, 51),
                (249, 140, 10), (249, 201, 50), (252, 255, 164)],
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122), (229, 80, 100),
              (251, 135, 97), (254, 194, 135), (252, 253, 191)],
    "viridis": [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
                (92, 200, 99), (170, 220, 50), (253, 231, 37)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}


def colormap_lut(name: str = "inferno") -> np.ndarray:
    """A 256 x 3 uint8 color table. Built in: inferno, magma, viridis, gray (and ``<name>_r`` reversed);
    any other name is looked up in matplotlib (imported only then)."""
    rev = name.endswith("_r")
    base = name[:-2] if rev else name
    if base in _ANCHORS:
        anchors = np.asarray(_ANCHORS[base], dtype=np.float64)
        t = np.linspace(0.0, 1.0, len(anchors))
        x = np.linspace(0.0, 1.0, 256)
        lut = np.stack([np.interp(x, t, anchors[:, c]) for c in range(3)], axis=1)
        lut = np.rint(lut).astype(np.uint8)
    else:
        try:
            import matplotlib  # lazy: slow import
            cmap = matplotlib.colormaps[base]
        except (ImportError, KeyError) as e:
            raise ValueError(f"unknown colormap {name!r} (built in: {sorted(_ANCHORS)}; "
                             f"others need matplotlib)") from e
        lut = np.rint(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    return lut[::-1].copy() if rev else lut


def _duration_ms(fps: float) -> int:
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    return max(10, int(round(1000.0 / fps / 10.0)) * 10)  # GIF delays are in 1/100 s


def _save_gif(path: PathLike, frames: list, fps: float, loop: int) -> None:
    if not frames:
        raise ValueError("no frames to write")
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=_duration_ms(fps),
                   loop=loop, optimize=False, disposal=1)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())


def write_gif(path: PathLike, images: Sequence[np.ndarray], fps: float = 12.0, loop: int = 0) -> None:
    """Write uint8 images (``[H, W]`` gray or ``[H, W, 3]`` RGB, all the same shape) as a looping GIF, atomically."""
    from PIL import Image

    frames = []
    shape = None
    for k, im in enumerate(images):
        a = np.asarray(im)
        if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
            raise ValueError(f"image {k} must be uint8 [H, W] or [H, W, 3], got {a.dtype} {a.shape}")
        if shape is not None and a.shape != shape:
            raise ValueError(f"image {k} has shape {a.shape}, image 0 has {shape}")
        shape = a.shape
        img = Image.fromarray(np.ascontiguousarray(a))
        frames.append(img.quantize(256) if a.ndim == 3 else img)
    _save_gif(path, frames, fps, loop)


def density_gif(path: PathLike, frames, vmax: float | None = None, cmap: str = "inferno", fps: float = 12.0,
                scale: int | None = None, row0: str = "top", loop: int = 0) -> float:
    """Colormapped GIF of density frames ``[F, H, W]``; returns the vmax used.

    Pixels map as in ``metaphys.io.images`` (clamped at 0, ``vmax`` default: sequence max, row 0
    at the top unless ``row0='bottom'``). ``scale``: integer nearest-neighbor upscaling, default
    the smallest that makes the longer side >= 256 px.
    """
    from PIL import Image

    from .images import density_to_pixels, sequence_max

    a = np.asarray(frames, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or 0 in a.shape:
        raise ValueError(f"frames must be [F, H, W], got shape {np.shape(frames)}")
    if vmax is None:
        vmax = sequence_max(a)
    idx = density_to_pixels(a, vmax, bits=8, row0=row0)  # [F, H, W] uint8 = palette index
    if scale is None:
        scale = max(1, -(-256 // max(a.shape[1:])))
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale > 1:
        idx = idx.repeat(scale, axis=1).repeat(scale, axis=2)
    palette = colormap_lut(cmap).ravel().tolist()
    imgs = []
    for k in range(idx.shape[0]):
        img = Image.frombytes("P", (idx.shape[2], idx.shape[1]), np.ascontiguousarray(idx[k]).tobytes())
        img.putpalette(palette)
        imgs.append(img)
    _save_gif(path, imgs, fps, loop)
    return float(vmax)


_VIEWS = {  # (horizontal axis, sign), (vertical axis, sign) in a +Z-up world, orthographic
    "front": ((0, 1.0), (2, 1.0)),   # looking along +Y: x right, z up
    "back": ((0, -1.0), (2, 1.0)),
    "side": ((1, 1.0), (2, 1.0)),    # looking along -X (Blender's Right view): y right, z up
    "right": ((1, 1.0), (2, 1.0)),
    "left": ((1, -1.0), (2, 1.0)),
    "top": ((0, 1.0), (1, 1.0)),     # looking down -Z: x right, y up
}


def project_cloth(frames, view: str = "side", size: int = 256, margin: int = 8) -> np.ndarray:
    """Orthographic pixel coordinates ``[F, V, 2]`` (x right, y down) of ``frames`` ``[F, V, 3]``.

    One bounding box for all frames (no camera jitter), aspect ratio kept.
    """
    if view not in _VIEWS:
        raise ValueError(f"view must be one of {sorted(_VIEWS)}, got {view!r}")
    a = np.asarray(frames, dtype=np.float64)
    (hx, hs), (vx, vs) = _VIEWS[view]
    u = a[..., hx] * hs
    v = a[..., vx] * vs
    umin, umax, vmin, vmax = u.min(), u.max(), v.min(), v.max()
    span = max(umax - umin, vmax - vmin, 1e-12)
    s = (size - 1 - 2 * margin) / span
    px = margin + (u - umin) * s + 0.5 * ((size - 1 - 2 * margin) - (umax - umin) * s)
    py = margin + (vmax - v) * s + 0.5 * ((size - 1 - 2 * margin) - (vmax - vmin) * s)
    return np.stack([px, py], axis=-1)


def cloth_gif(path: PathLike, frames, H: int | None = None, W: int | None = None, view: str = "side",
              size: int = 256, fps: float = 12.0, loop: int = 0, edge_color=(40, 70, 140),
              border_color=(200, 40, 40), background=(255, 255, 255)) -> None:
    """Wireframe GIF of an H x W cloth: ``frames`` ``[F, H*W, 3]`` (with H, W) or ``[F, H, W, 3]``.

    Orthographic ``view``: 'front' (x-z), 'side'/'right' (y-z), 'left', 'back' or 'top' (x-y),
    +Z up; grid rows and columns drawn as polylines, the border in ``border_color``.
    """
    from PIL import Image, ImageDraw

    a = np.asarray(frames, dtype=np.float64)
    if a.ndim == 4 and a.shape[-1] == 3:
        H, W = a.shape[1], a.shape[2]
        a = a.reshape(a.shape[0], -1, 3)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] != 3 or H is None or W is None or H * W != a.shape[1]:
        raise ValueError(f"frames must be [F, H, W, 3], or [F, H*W, 3] with H and W, got shape {np.shape(frames)}"
                         f" with H={H}, W={W}")
    if not np.isfinite(a).all():
        bad = int(np.argmin(np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)))
        raise ValueError(f"frames: frame {bad} has a non-finite position")
    p = project_cloth(a, view, size).reshape(a.shape[0], H, W, 2).astype(np.float32)
    palette = list(background) + list(edge_color) + list(border_color)
    imgs = []
    for k in range(a.shape[0]):
        img = Image.new("P", (size, size), 0)
        img.putpalette(palette)
        d = ImageDraw.Draw(img)
        g = p[k]
        for i in range(1, H - 1):
            d.line(g[i].ravel().tolist(), fill=1)
        for j in range(1, W - 1):
            d.line(g[:, j].ravel().tolist(), fill=1)
        border = np.concatenate([g[0], g[1:, -1], g[-1, ::-1][1:], g[::-1, 0][1:]])
        d.line(border.ravel().tolist(), fill=2, width=2)
        imgs.append(img)
    _save_gif(path, imgs, fps, loop)


def gif_frame_count(path: PathLike) -> int:
    """Number of frames stored in a GIF."""
    from PIL import Image

    with Image.open(path) as img:
        return int(getattr(img, "n_frames", 1))
