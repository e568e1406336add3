"""A wedge's contact sheet: one frame of every variant's bake side by side, labelled with its values.

Smoke cells show the density (the preview's inferno colormap, one scale for the whole sheet, so the
variants compare); cloth cells a front-view wireframe of the positions in cloth.pc2 (one framing for
the whole sheet where the variants have the same vertex count). Read from the bake folders, so a
sheet can be redrawn at any time; written atomically (io.atomic).
"""
from __future__ import annotations

import io
import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from metaphys.io import pc2
from metaphys.io.atomic import atomic_write_bytes
from metaphys.io.images import read_frame_npz
from metaphys.io.manifest import read_manifest
from metaphys.io.preview import colormap_lut, project_cloth

PAD = 4              # pixels between and around cells
LINE = 12            # pixels per label line (Pillow's default bitmap font is 11 px high)
BACKGROUND = (32, 32, 32)


def sheet_size(count: int, lines: int, cell: int, columns: Optional[int] = None) -> Tuple[int, int, int, int]:
    """(width, height, columns, rows) of a sheet of ``count`` cells of ``cell`` pixels with ``lines``
    label lines under each."""
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    return (columns * (cell + PAD) + PAD, rows * (cell + lines * LINE + PAD) + PAD, columns, rows)


def pick_frame(bake_dir: str, frame: Optional[int]):
    """(manifest dict, the frame's record) of the bake in ``bake_dir``: frame number ``frame``, or its
    last frame; (manifest or None, None) when there is no such frame."""
    try:
        m = read_manifest(os.path.join(bake_dir, "manifest.json"))
    except (OSError, ValueError):
        return None, None
    records = m.get("frames") or []
    if frame is None:
        return m, (records[-1] if records else None)
    return m, next((r for r in records if r.get("frame") == frame), None)


def _smoke_density(bake_dir: str, record: dict) -> np.ndarray:
    return np.asarray(read_frame_npz(os.path.join(bake_dir, record["files"]["npz"]))["density"], dtype=np.float64)


def _cloth_grid(bake_dir: str, manifest: dict, record: dict) -> Tuple[np.ndarray, int, int]:
    frames, _, _ = pc2.read_pc2(os.path.join(bake_dir, "cloth.pc2"))
    p = np.asarray(frames[int(record["files"]["pc2_sample"])], dtype=np.float64)
    params = manifest.get("parameters", {})
    order = params.get("vertex_index")
    if isinstance(order, list):  # grid vertex g is mesh vertex order[g]
        p = p[np.asarray(order, dtype=np.int64)]
    return p, int(params["rows"]), int(params["cols"])


def _fit(img, cell: int):
    """``img`` scaled (nearest) to fit a ``cell`` square, centred on the background."""
    from PIL import Image
    w, h = img.size
    s = cell / max(w, h)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.NEAREST)
    canvas = Image.new("RGB", (cell, cell), BACKGROUND)
    canvas.paste(img, ((cell - img.size[0]) // 2, (cell - img.size[1]) // 2))
    return canvas


def _smoke_cells(densities: List[Optional[np.ndarray]], cell: int):
    from PIL import Image
    vmax = max([float(d.max()) for d in densities if d is not None] + [0.0]) or 1.0
    lut = colormap_lut("inferno")
    out = []
    for d in densities:
        if d is None:
            out.append(None)
            continue
        idx = np.rint(np.clip(d / vmax, 0.0, 1.0) * 255).astype(np.uint8)
        out.append(_fit(Image.fromarray(np.ascontiguousarray(lut[idx])), cell))
    return out


def _cloth_cells(grids: List[Optional[Tuple[np.ndarray, int, int]]], cell: int):
    from PIL import Image, ImageDraw
    shapes = {g[0].shape for g in grids if g is not None}
    shared = len(shapes) == 1  # one framing for the sheet: the variants' positions compare
    if shared:
        stack = np.stack([g[0] for g in grids if g is not None])
        pts = iter(project_cloth(stack, "front", cell))
    out = []
    for g in grids:
        if g is None:
            out.append(None)
            continue
        p = next(pts) if shared else project_cloth(g[0][None], "front", cell)[0]
        rows, cols = g[1], g[2]
        p = p.reshape(rows, cols, 2)
        img = Image.new("RGB", (cell, cell), (255, 255, 255))
        d = ImageDraw.Draw(img)
        for i in range(rows):
            d.line(p[i].ravel().tolist(), fill=(40, 70, 140))
        for j in range(cols):
            d.line(p[:, j].ravel().tolist(), fill=(40, 70, 140))
        out.append(img)
    return out


def write_contact_sheet(path: str, kind: str, cells: Sequence[Tuple[str, List[str]]], frame: Optional[int] = None,
                        cell: int = 192, columns: Optional[int] = None) -> dict:
    """Write the sheet of ``cells`` = [(bake folder, label lines)] to ``path`` (PNG, atomically);
    returns its layout (size, columns, rows, cell, frame, the frame each cell shows)."""
    from PIL import Image, ImageDraw, ImageFont
    picked = [pick_frame(folder, frame) for folder, _ in cells]
    shown = [r.get("frame") if r is not None else None for _, r in picked]
    if kind == "smoke":
        images = _smoke_cells([_smoke_density(folder, r) if r is not None else None
                               for (folder, _), (_, r) in zip(cells, picked)], cell)
    else:
        images = _cloth_cells([_cloth_grid(folder, m, r) if r is not None else None
                               for (folder, _), (m, r) in zip(cells, picked)], cell)
    lines = max([len(label) for _, label in cells] + [1]) + 1
    width, height, columns, rows = sheet_size(len(cells), lines, cell, columns)
    sheet = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    chars = max(4, cell // 6)
    for k, ((_, label), img, number) in enumerate(zip(cells, images, shown)):
        x = PAD + (k % columns) * (cell + PAD)
        y = PAD + (k // columns) * (cell + lines * LINE + PAD)
        if img is None:
            sheet.paste(Image.new("RGB", (cell, cell), BACKGROUND), (x, y))
            missing = f"no frame {frame}" if frame is not None else "no frames"
            draw.text((x + 6, y + cell // 2 - 6), missing, fill=(200, 80, 80), font=font)
        else:
            sheet.paste(img, (x, y))
        caption = list(label) + ([f"frame {number}"] if number is not None else [])
        for i, text in enumerate(caption[:lines]):
            text = text if len(text) <= chars else text[:chars - 1] + "~"
            draw.text((x, y + cell + 1 + i * LINE), text, fill=(230, 230, 230), font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=6)
    atomic_write_bytes(path, buf.getvalue())
    return {"file": os.path.basename(path), "size": [width, height], "columns": columns, "rows": rows,
            "cell": cell, "frame": frame, "frames_shown": shown}
