"""What the add-on's scene readers (extract_cloth, extract_smoke) and results.py share: the
user-facing error, the cache modifier's name and place in the stack, matrices, frame range, fps,
and atomic file writes."""
from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np

CACHE_MODIFIER = "metaphys cloth"

# Modifiers that move vertices but keep the topology: they may sit before the cache modifier.
DEFORM_TYPES = {
    "ARMATURE", "CAST", "CURVE", "DISPLACE", "HOOK", "LAPLACIANDEFORM", "LATTICE", "MESH_DEFORM",
    "SHRINKWRAP", "SIMPLE_DEFORM", "SMOOTH", "CORRECTIVE_SMOOTH", "LAPLACIANSMOOTH", "SURFACE_DEFORM",
    "WARP", "WAVE", "VOLUME_DISPLACE", "GREASE_PENCIL_NOISE", "MESH_SEQUENCE_CACHE", "NORMAL_EDIT",
    "WEIGHTED_NORMAL", "UV_PROJECT", "UV_WARP", "VERTEX_WEIGHT_EDIT", "VERTEX_WEIGHT_MIX",
    "VERTEX_WEIGHT_PROXIMITY", "DATA_TRANSFER",
}


class ExtractError(ValueError):
    """A problem with the scene the user can fix; the message is shown as a Blender report."""


def np_matrix(m) -> np.ndarray:
    return np.array([list(r) for r in m], dtype=np.float64)


def cache_modifier_index(obj) -> int:
    """Where the cache modifier sits (or will be inserted): after the leading deform modifiers."""
    mods = list(obj.modifiers)
    for k, md in enumerate(mods):
        if md.type == "MESH_CACHE" and md.name == CACHE_MODIFIER:
            return k
    for k, md in enumerate(mods):
        if md.type not in DEFORM_TYPES:
            return k
    return len(mods)


def frame_range(scene, settings) -> tuple[int, int]:
    if settings.use_scene_range:
        return int(scene.frame_start), int(scene.frame_end)
    return int(settings.frame_start), int(settings.frame_end)


def scene_fps(scene) -> float:
    return float(scene.render.fps) / float(scene.render.fps_base or 1.0)


@contextlib.contextmanager
def atomic_path(path: str):
    """A temporary file beside ``path`` to write (same extension last, for writers that pick the format
    by name); it replaces ``path`` when the body succeeds and is removed when it fails. The add-on runs
    in Blender's Python without metaphys, so this is its one copy of metaphys.io.atomic.atomic_path."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".metaphys-tmp{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        mask = os.umask(0)  # reading the umask means setting it: put it straight back
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # a new file's usual mode, not mkstemp's private 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
