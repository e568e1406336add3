"""Bring bake results into the scene: Mesh Cache modifier (cloth), Volume object (smoke).

The add-on never rewrites a result: the engine writes the cloth cache in object-local space (the
spec's ``output_matrix``, one per frame for an animated object) and records the VDB grids'
transform in the manifest.
"""
from __future__ import annotations

import glob
import json
import os
import re

import numpy as np

from .common import CACHE_MODIFIER, cache_modifier_index

__all__ = ["apply_cloth_cache", "remove_cloth_cache", "import_smoke_volume",
           "remove_smoke_volume", "vdb_files", "VOLUME_SUFFIX", "blend_path"]

VOLUME_SUFFIX = " metaphys smoke"


def blend_path(path: str) -> str:
    """Path as stored in Blender data: relative ('//...') when the .blend is saved, else absolute."""
    import bpy
    if bpy.data.filepath:
        try:
            return bpy.path.relpath(path)
        except ValueError:  # other drive (Windows)
            return path
    return path


def apply_cloth_cache(obj, pc2_path: str, start_frame: int):
    """Add (or update) the metaphys Mesh Cache modifier on ``obj`` reading ``pc2_path``."""
    md = obj.modifiers.get(CACHE_MODIFIER)
    if md is None or md.type != "MESH_CACHE":
        k = cache_modifier_index(obj)
        md = obj.modifiers.new(CACHE_MODIFIER, "MESH_CACHE")
        cur = len(obj.modifiers) - 1
        if k < cur:
            _move_modifier(obj, md, k)
    md.cache_format = "PC2"
    md.filepath = blend_path(pc2_path)
    md.time_mode = "FRAME"
    md.play_mode = "SCENE"
    md.deform_mode = "OVERWRITE"
    md.interpolation = "LINEAR"
    md.forward_axis = "POS_Y"
    md.up_axis = "POS_Z"
    md.factor = 1.0
    # Scene frame f shows sample f - frame_start (checked in bpy 5.0.1, see metaphys/io/pc2.py).
    md.frame_start = float(start_frame)
    md.frame_scale = 1.0
    obj.update_tag()
    return md


def _move_modifier(obj, md, index: int) -> None:
    try:
        obj.modifiers.move(len(obj.modifiers) - 1, index)
    except (AttributeError, RuntimeError, TypeError):
        import bpy
        with bpy.context.temp_override(object=obj, active_object=obj):
            bpy.ops.object.modifier_move_to_index(modifier=md.name, index=index)


def remove_cloth_cache(obj) -> bool:
    md = obj.modifiers.get(CACHE_MODIFIER)
    if md is None:
        return False
    obj.modifiers.remove(md)
    obj.update_tag()
    return True


# -- smoke -------------------------------------------------------------------------------------
_NUM = re.compile(r"(\d+)(?=\.vdb$)")


def vdb_files(out_dir: str) -> list[str]:
    files = glob.glob(os.path.join(out_dir, "density", "*.vdb"))
    return sorted(files, key=lambda p: int(_NUM.search(os.path.basename(p)).group(1))
                  if _NUM.search(os.path.basename(p)) else 0)


def _volume_name(domain) -> str:
    return domain.name + VOLUME_SUFFIX


def _index_to_plane_local(g: dict) -> np.ndarray:
    """Voxel index (x=j, y=slice, z=H-1-i; metaphys.io.vdb convention) -> domain-local position.

    Voxel centres land on the cell centres; the one-voxel slab is centred on the plane.
    """
    cx, cy = g["cell_x"], g["cell_y"]
    cz = 0.5 * (cx + cy)
    A = np.eye(4)
    A[:3, :3] = [[cx, 0.0, 0.0], [0.0, 0.0, cy], [0.0, -cz, 0.0]]
    A[:3, 3] = [g["x0"] + 0.5 * cx, g["y0"] + 0.5 * cy, g["z"]]
    return A


def engine_index_to_object(out_dir: str):
    """The VDB grids' index-to-object transform as the engine recorded it in the bake's manifest.json
    (``extra.vdb_index_to_world``, OpenVDB's row-vector form), as a column-vector 4x4; None if absent."""
    try:
        with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as fh:
            recorded = (json.load(fh).get("extra") or {}).get("vdb_index_to_world")
    except (OSError, ValueError):
        return None
    return None if recorded is None else np.asarray(recorded, dtype=np.float64).T


def import_smoke_volume(context, domain, out_dir: str, spec: dict, geometry: dict, density_scale: float = 10.0):
    """Create/update the Volume object of ``domain`` reading the baked VDB sequence. Returns it or None."""
    import bpy
    from mathutils import Matrix

    files = vdb_files(out_dir)
    if not files:
        return None
    first = files[0]
    m = _NUM.search(os.path.basename(first))
    first_num = int(m.group(1)) if m else 1
    start = int(spec.get("start_frame", 1))
    name = _volume_name(domain)
    ob = bpy.data.objects.get(name)
    if ob is not None and ob.type == "VOLUME":
        vol = ob.data
    else:
        vol = bpy.data.volumes.new(name)
        ob = bpy.data.objects.new(name, vol)
        coll = domain.users_collection[0] if domain.users_collection else context.scene.collection
        coll.objects.link(ob)
    vol.filepath = blend_path(first)
    # read the grid transform from the first file (as a single file, whatever the current frame)
    vol.is_sequence = False
    vol.grids.unload()
    M_g = None
    if vol.grids.load() and "density" in vol.grids:
        M_g = np.array([list(r) for r in vol.grids["density"].matrix_object], dtype=np.float64)
    vol.grids.unload()
    vol.is_sequence = len(files) > 1
    vol.frame_start = start
    vol.frame_duration = len(files)
    # Blender loads file number (scene frame - frame_start + 1 + frame_offset).
    vol.frame_offset = first_num - 1
    vol.sequence_mode = "CLIP"
    if M_g is None or abs(np.linalg.det(M_g[:3, :3])) < 1e-30:  # Blender could not read the grid's own
        M_g = engine_index_to_object(out_dir)
    if M_g is None:
        raise RuntimeError(f"cannot place the smoke volume: {first!r} has no readable grid transform and the "
                           "bake's manifest.json records none; bake again with this version of metaphys")
    if len(spec.get("resolution") or ()) == 3:
        M = np.eye(4)  # a 3-D bake's grids are placed in world space already (the spec's origin)
    else:
        A = _index_to_plane_local(geometry)
        D = np.array([list(r) for r in domain.matrix_world], dtype=np.float64)
        M = D @ A @ np.linalg.inv(M_g)
    ob.matrix_world = Matrix(M.tolist())
    ob.metaphys_smoke.role = "NONE"
    _smoke_material(vol, density_scale)
    vol.display.density = 1.0
    ob["metaphys_domain"] = domain.name
    return ob


def _smoke_material(vol, density_scale: float):
    import bpy
    name = "metaphys smoke"
    mat = bpy.data.materials.get(name)
    if mat is None:
        mat = bpy.data.materials.new(name)
        if mat.node_tree is None:  # Blender < 5: materials start without nodes
            mat.use_nodes = True
        nt = mat.node_tree
        for n in list(nt.nodes):
            nt.nodes.remove(n)
        out = nt.nodes.new("ShaderNodeOutputMaterial")
        pv = nt.nodes.new("ShaderNodeVolumePrincipled")
        pv.location = (-300, 0)
        nt.links.new(pv.outputs[0], out.inputs["Volume"])
    nt = mat.node_tree
    pv = next((n for n in nt.nodes if n.bl_idname == "ShaderNodeVolumePrincipled"), None)
    if pv is not None:
        pv.inputs["Density"].default_value = float(density_scale)
        if "Density Attribute" in pv.inputs:
            pv.inputs["Density Attribute"].default_value = "density"
        else:  # pragma: no cover - older Blender: a node property
            pv.density_attribute = "density"
        pv.inputs["Color"].default_value = (0.8, 0.8, 0.8, 1.0)
    if len(vol.materials) == 0:
        vol.materials.append(mat)
    else:
        vol.materials[0] = mat
    return mat


def remove_smoke_volume(domain) -> bool:
    import bpy
    ob = bpy.data.objects.get(_volume_name(domain))
    if ob is None or ob.type != "VOLUME":
        return False
    vol = ob.data
    bpy.data.objects.remove(ob)
    if vol.users == 0:
        bpy.data.volumes.remove(vol)
    return True


def reload_volume(ob) -> None:
    """Make Blender re-read the VDB files after the cache folder was swapped."""
    vol = ob.data
    vol.grids.unload()
    path = vol.filepath
    vol.filepath = path
    vol.grids.load()
    ob.update_tag()


# -- the last bake at a glance: per-frame numbers from manifest.json --------------------------------
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values, log: bool = False, width: int = 48) -> str:
    """A one-line bar chart of ``values`` (None/non-finite -> a space), resampled to at most ``width``."""
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
    if v.size == 0:
        return ""
    if v.size > width:  # keep the worst value of each bucket: a spike must stay visible
        edges = np.linspace(0, v.size, width + 1).astype(int)
        v = np.array([np.nanmax(v[a:b]) if np.isfinite(v[a:b]).any() else np.nan
                      for a, b in zip(edges[:-1], edges[1:])])
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(v > 0, np.log10(v), np.nan)
    ok = np.isfinite(v)
    if not ok.any():
        return " " * v.size
    lo, hi = v[ok].min(), v[ok].max()
    idx = np.zeros(v.size, dtype=int) if hi <= lo else np.round((v - lo) / (hi - lo) * (len(_BARS) - 1))
    return "".join(_BARS[int(i)] if k else " " for i, k in zip(np.nan_to_num(idx), ok))


def bake_stats(manifest_path: str) -> dict:
    """Per-frame convergence and strain of a finished bake (from its manifest.json), for the panel and report:
    ``{"frames", "residual", "residual_key", "max_strain", "finished_by", "converged", "summary"}``."""
    import json
    with open(manifest_path) as fh:
        m = json.load(fh)
    recs = m.get("frames") or []
    key = "relative_residual" if any(r.get("relative_residual") is not None for r in recs) else "residual"
    return {"frames": [r.get("frame") for r in recs],
            "residual": [r.get(key) for r in recs], "residual_key": key,
            "max_strain": [r.get("max_strain") for r in recs],
            "finished_by": [r.get("finished_by") for r in recs],
            "converged": [r.get("converged") for r in recs],
            "tol": (m.get("parameters") or {}).get("tol"),
            "strain_limit": (m.get("parameters") or {}).get("strain_limit"),
            "summary": m.get("summary") or {}}


def _worst(values, frames):
    pairs = [(float(v), f) for v, f in zip(values, frames) if v is not None and np.isfinite(float(v))]
    return max(pairs) if pairs else (None, None)


def stats_lines(stats: dict) -> list[str]:
    """Text lines for the panel: a sparkline each for the residual (log scale) and the strain, and a summary."""
    if not stats or not stats.get("frames"):
        return []
    fr = stats["frames"]
    lines = []
    res, res_f = _worst(stats["residual"], fr)
    if res is not None:
        name = "rel. residual" if stats.get("residual_key") == "relative_residual" else "residual"
        lines.append(f"{name} (log) {sparkline(stats['residual'], log=True)}  max {res:.1e} @ {res_f}")
    strain, st_f = _worst(stats.get("max_strain") or [], fr)
    if strain is not None:
        lines.append(f"max strain {sparkline(stats['max_strain'])}  max {100 * strain:.2f}% @ {st_f}")
    by = [b for b in stats.get("finished_by") or [] if b]
    conv = [c for c in stats.get("converged") or [] if c is not None]
    parts = []
    if by:
        parts.append(f"Newton finished {sum(b == 'newton' for b in by)}/{len(by)} frames")
    if conv:
        bad = [f for f, c in zip(fr, stats["converged"]) if c is False]
        parts.append("all converged" if not bad else f"{len(bad)} not converged (first: frame {bad[0]})")
    if parts:
        lines.append(", ".join(parts))
    return lines


def stats_summary(stats: dict) -> str:
    """One sentence for the bake report."""
    if not stats or not stats.get("frames"):
        return ""
    fr = stats["frames"]
    res, res_f = _worst(stats["residual"], fr)
    out = []
    if res is not None:
        out.append(f"worst {'relative ' if stats.get('residual_key') == 'relative_residual' else ''}"
                   f"residual {res:.1e} (frame {res_f})")
    strain, st_f = _worst(stats.get("max_strain") or [], fr)
    if strain is not None:
        out.append(f"max strain {100 * strain:.2f}% (frame {st_f})")
    bad = [f for f, c in zip(fr, stats.get("converged") or []) if c is False]
    if bad:
        out.append(f"{len(bad)} frame(s) missed the tolerance")
    return "; ".join(out)
