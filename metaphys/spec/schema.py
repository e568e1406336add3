"""Bake spec schemas (cloth, smoke): types, ranges, units and defaults in one place, free of bpy.

``validate(kind, spec, size=...)`` checks a whole spec BEFORE anything is written and returns
the complete parameter dict (defaults filled in). Every problem is reported with its key path
and what was expected, e.g. ``colliders[1].radius: expected a number > 0 (metres), got "big"``;
unknown keys get a "did you mean". Nothing is coerced: a bool is not a number, 2.7 is not an
int and "no" is not a bool. ``markdown_table(kind)`` renders the same schema for
docs/bake-spec.md (``python -m metaphys.spec.schema --write-docs`` updates it).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from metaphys import colliders as collider_kinds
from metaphys.spec.files import MAX_DEPTH, check_depth
from metaphys.spec.types import (Array, Bool, Choice, Int, Invalid, Key, ListOf, Many, Number, Object,
                                      SpecError, Track, Vector, show, unknown_key)

__all__ = ["SpecError", "validate", "CLOTH_SCHEMA", "SMOKE_SCHEMA", "SMOKE3D_SCHEMA", "SCHEMAS", "is_3d_smoke", "defaults", "markdown_table",
           "update_docs", "RENAMED", "SMOKE_REMOVED"]


# ---- the schemas ----------------------------------------------------------------------------------
# Blender's frame range (MINAFRAME..MAXFRAME): frame numbers and counts stay within it, so a bake of
# "frames": 10**400 is refused instead of starting a bake that never ends.
MAX_FRAME = 1048574
FPS_RANGE = (1.0, 1000.0)          # frames per second; 1e-300 would make 1/fps overflow
MAX_SUBSTEPS = 1000
MAX_GRID = 4096                    # vertices / cells per side: 4096^2 float64 state is already GBs
# Keys of the old (model-unit) cloth material: refused with what they became (issue #12).
RENAMED = {
    "stretch": "this key was replaced by \"tension\" (membrane stretch stiffness in N/m, default 250); "
               "the old dimensionless values do not carry over",
    "bend": "this key was replaced by \"bending\" (bending stiffness in N*m, default 2.5e-5); "
            "the old dimensionless values do not carry over",
    "damping": "this key was replaced by \"air_damping\" (velocity damping in 1/s, default 0.1)",
}

_V3 = Vector(3, "metres", names="[x, y, z]")
COLLIDER = Object("collider", {"center": Key(Track(_V3), required=True,
                                             doc="[x, y, z] metres, or a per-frame list of them"),
                                "friction": Key(Number(0, unit="Coulomb coefficient"), 0.0,
                                                "cloth-collider friction (lagged: the normal force of the step "
                                                "before); 0 = frictionless"),
                                "thickness": Key(Number(0, unit="metres", nullable=True), None,
                                                 "distance the cloth keeps from this collider's surface (Blender's "
                                                 "Collision modifier: Thickness Outer); null = the cloth's "
                                                 "`contact_margin`")},
                  tag="type", variants=None)


def _collider_variants() -> Dict[str, Dict[str, Key]]:
    """The spec's collider variants, one per kind of metaphys.colliders.KINDS: the kind's parameters
    (numbers or vectors > 0, metres), its ``rotation`` track where it has one, and a mesh's arrays."""
    out = {}
    for kind in collider_kinds.KINDS:
        keys = {}
        for p in kind.params:
            keys[p.name] = Key(Number(0, lo_open=True, unit="metres") if p.size == 1 else
                               Vector(p.size, "metres", lo=0, lo_open=True, names=p.doc), required=True)
        if kind.name == "mesh":
            keys["vertices"] = Key(Array("V x 3 (static) or frames x V x 3 (deforming) positions (metres, relative "
                                         "to `center`)", nullable=False, path_ok=True), required=True)
            keys["faces"] = Key(Array("T x 3 vertex indices", integer=True, nullable=False, path_ok=True, lo=0),
                                required=True)
        if kind.rotation:
            keys["rotation"] = Key(Track(Vector(3, "degrees", names="[rx, ry, rz]")), None, kind.rotation_doc)
        out[kind.name] = keys
    return out


COLLIDER.variants = _collider_variants()
_COLLIDER_DOC = (" or ".join(k.example for k in collider_kinds.KINDS) + ", metres; all take `\"friction\": mu` "
                 "(default 0) and `\"thickness\": metres` (default: `contact_margin`)")

CLOTH_SCHEMA: Dict[str, Key] = {
    "rows": Key(Int(16, MAX_GRID), None, "grid vertex count along the rows (the optimizer needs >= 16)", "`--size` (32)"),
    "cols": Key(Int(16, MAX_GRID), None, "grid vertex count along the columns", "`rows`"),
    "rest_positions": Key(Array("a rows*cols x 3 list of [x, y, z] (metres, world space)"), None,
                          "rest mesh in row-major grid order (row = i, column = j)",
                          "a horizontal square `size_m` wide at z = `height`"),
    "size_m": Key(Number(0, lo_open=True, unit="metres"), 1.0, "width of the default cloth"),
    "height": Key(Number(unit="metres"), 1.0, "z of the default (horizontal) cloth"),
    "vertex_index": Key(Array("a list of rows*cols integers", integer=True), None,
                        "mesh vertex index of each grid vertex; caches and rest.obj are written in mesh order",
                        "grid order"),
    "output_matrix": Key(Array("a 4x4 row-major matrix, or one per frame (frames x 4 x 4)"), None,
                         "applied to positions before writing (e.g. world -> object local); per frame: output "
                         "frame k uses entry k (a shorter list holds its last entry)", "identity"),
    "frames": Key(Int(1, MAX_FRAME), 48, "number of frames"),
    "fps": Key(Number(*FPS_RANGE, unit="frames per second"), 24.0, "time per frame = 1 / fps"),
    "start_frame": Key(Int(-MAX_FRAME, MAX_FRAME), 1, "number of the first baked frame (the last one, "
                       f"start_frame + frames - 1, is at most {MAX_FRAME}: Blender's last frame)"),
    "substeps": Key(Int(1, MAX_SUBSTEPS), 1, "solver time steps per frame"),
    "gravity": Key(Vector(3, "m/s^2"), [0.0, 0.0, -9.81], "gravitational acceleration"),
    "mass_per_area": Key(Number(0, lo_open=True, unit="kg/m^2"), 0.2, "areal density of the cloth"),
    "tension": Key(Number(0, lo_open=True, unit="N/m"), 250.0, "membrane stretch stiffness"),
    "shear": Key(Number(0, unit="N/m"), 10.0, "in-plane shear stiffness"),
    "bending": Key(Number(0, unit="N*m"), 2.5e-5, "bending stiffness"),
    "air_damping": Key(Number(0, unit="1/s"), 0.1, "velocity damping"),
    "wind": Key(Vector(3, "m/s^2"), [0.0, 0.0, 0.0], "uniform acceleration"),
    "pin_weights": Key(Array("a list of rows*cols numbers in [0, 1]", lo=0.0, hi=1.0), None,
                       "1 = hard pin, between = soft spring", "the two top corners pinned"),
    "pin_targets": Key(Array("rows*cols x 3 (static) or frames x rows*cols x 3 (animated) positions (metres)"),
                       None, "positions pinned vertices follow (per-frame tracks: see above)", "rest positions"),
    "colliders": Key(ListOf(COLLIDER, "colliders"), None,
                     _COLLIDER_DOC,
                     "a sphere under the default cloth; none with `rest_positions`"),
    "contact_margin": Key(Number(0, 1, lo_open=True, unit="fraction of an edge"), 0.25,
                          "collision distance kept from colliders"),
    "self_collision": Key(Bool(), False, "keep the cloth's layers from passing through each other (vertex "
                          "repulsion with continuous collision checks in Newton's line search; solver `newton`)"),
    "self_collision_distance": Key(Number(0.75, 3, unit="rest edge lengths"), 1.0,
                                   "distance the cloth's layers keep apart (their vertices are held at least "
                                   "0.75 of it apart)"),
    "solver": Key(Choice("auto", "metamizer", "newton"), "newton",
                  "`newton`: Newton-Krylov to `tol` (the fastest converged solver, measured: issue #24); "
                  "`auto`: Metamizer iterations, then Newton when above `tol`; `metamizer`: the network alone"),
    "tol": Key(Number(0, lo_open=True, unit="relative residual", nullable=True), 1e-5,
               "|grad| / max(|grad at frame start|, |gravity force|); the default keeps each step within "
               "1e-3 edge lengths of a 1e-10 solve (benchmarks/results/cloth_tolerance.md); null only with "
               "solver `metamizer`"),
    "step_tol": Key(Number(0, lo_open=True, unit="rest edge lengths", nullable=True), 3e-4,
                    "Newton also stops where its estimate of the distance left to the step's answer (from "
                    "its last two steps) is below this; the default keeps each step within 1e-3 edge lengths "
                    "of a 1e-10 solve (benchmarks/results/cloth_accuracy.md); null = the residual `tol` alone"),
    "frame_time_budget": Key(Number(0, lo_open=True, unit="seconds", nullable=True), 30.0,
                             "Newton's time per frame; a frame at its budget keeps its best iterate and is "
                             "recorded as such in the manifest; null = no limit"),
    "iterations_per_step": Key(Int(1), 30, "Metamizer iterations per time step"),
    "max_iterations": Key(Int(1), 200, "Metamizer iteration cap per step"),
    "newton_max_iterations": Key(Int(1), 100, "Newton iteration cap per step"),
    "strain_limit": Key(Number(0, lo_open=True, unit="fraction"), 0.5,
                        "max edge strain |e|/L0 - 1 before a frame is flagged (0.5 = 50 %)"),
    "guard": Key(Bool(), True, "reject optimizer steps that make the loss grow or non-finite"),
    "threads": Key(Int(1, nullable=True), None, "CPU threads (`--threads` overrides)",
                   "null = auto (1 up to 96^2, all cores above)"),
}

OBSTACLE = Object("obstacle shape", {"center": Key(Track(Vector(2, "cells", names="[row, col]")), required=True)},
                  tag="type", variants={
                      "circle": {"radius": Key(Number(0, lo_open=True, unit="cells"), required=True)},
                      "box": {"half": Key(Vector(2, "cells", lo=0, lo_open=True, names="[rows, cols]"),
                                          required=True)}})

SMOKE_SCHEMA: Dict[str, Key] = {
    "resolution": Key(Vector(2, "cells", lo=16, hi=MAX_GRID, integer=True, names="[rows, cols]"), None,
                      "cells of the 2D domain (square cells)", "[`--size`, `--size`] (128)"),
    "size_m": Key(Number(0, lo_open=True, unit="metres"), 1.0,
                  "length of the domain's longer side: a cell is size_m / max(rows, cols)",
                  "`1.0`, or `cell_size` * max(rows, cols) when only `cell_size` is given"),
    "cell_size": Key(Number(0, lo_open=True, unit="metres", nullable=True), None,
                     "size of a cell (the VDB voxel size); given with `size_m`, the two must agree",
                     "size_m / max(rows, cols)"),
    "frames": Key(Int(1, MAX_FRAME), 48, "number of frames"),
    "fps": Key(Number(*FPS_RANGE, unit="frames per second"), 24.0, "time per frame = 1 / fps"),
    "start_frame": Key(Int(-MAX_FRAME, MAX_FRAME), 1, "number of the first baked frame (the last one, "
                       f"start_frame + frames - 1, is at most {MAX_FRAME}: Blender's last frame)"),
    "substeps": Key(Int(1, MAX_SUBSTEPS), 1, "fewest fluid steps per frame (a fast flow takes more: `cfl`)"),
    "cfl": Key(Number(0, lo_open=True, unit="cells per fluid step"), 4.0,
               "farthest the flow may move in one fluid step: each frame takes the steps its fastest flow "
               "needs (up to 1000)"),
    "emitters": Key(Array("a .npy path or a [rows, cols] / [frames, rows, cols] array in [0, 1]",
                          path_ok=True), None, "where density is injected (the value scales the rate)",
                    "a disc at the bottom centre (radius 0.1 of the shorter side)"),
    "obstacles": Key(Array("a .npy path or a [rows, cols] / [frames, rows, cols] array, 1 = solid",
                           path_ok=True), None, "solid cells", "none"),
    "obstacle_shapes": Key(ListOf(OBSTACLE, "obstacle shapes"), None,
                           "`{\"type\": \"circle\", \"center\": [row, col] or per-frame list, \"radius\": r}` or "
                           "`{\"type\": \"box\", \"center\": ..., \"half\": [rows, cols]}`, in cells (row 0 = top)",
                           "none"),
    "emitter_density": Key(Number(0, unit="density per second"), 1.0, "density injected inside emitters"),
    "emitter_velocity": Key(Vector(2, "m/s", names="[vx, vy]"), [0.0, 0.0],
                            "emitters speed the flow inside them up to this velocity, per axis (0: no push)"),
    "buoyancy": Key(Number(unit="m/s^2 per unit density"), 4.0, "upward acceleration of smoke of density 1"),
    "viscosity": Key(Number(0, unit="m^2/s"), 1e-3,
                     "kinematic viscosity (air: 1.5e-5; the default keeps the plume's shape the same from 64^2 "
                     "to 256^2: benchmarks/results/smoke_units.md)"),
    "density_diffusion": Key(Number(0, unit="m^2/s"), 0.0, "diffusion of the density"),
    "wind": Key(Vector(2, "m/s^2", names="[vx, vy]"), [0.0, 0.0], "uniform acceleration"),
    "emitter_heat": Key(Number(0, unit="temperature per second"), 0.0,
                        "heat injected inside emitters (temperature above the ambient air, carried and diffused "
                        "with the density; 0 = none)"),
    "heat_buoyancy": Key(Number(unit="m/s^2 per unit temperature"), 4.0, "upward acceleration of hot air"),
    "cooling": Key(Number(0, unit="1/s"), 1.0, "the temperature decays as exp(-cooling * t)"),
    "iterations_per_step": Key(Int(1), 20, "optimizer iterations per fluid step"),
    "tol": Key(Number(0, lo_open=True, unit="mean squared residual", nullable=True), None,
               "iterate each step until below (up to `max_iterations`); null = `iterations_per_step`"),
    "max_iterations": Key(Int(1), 200, "iteration cap per step with `tol`"),
    "png_max": Key(Number(0, lo_open=True, unit="density"), 1.0, "density mapped to white in the PNGs"),
    "vdb": Key(Bool(), True, "write OpenVDB files (`density` and `velocity` (m/s) grids)"),
    # game flipbooks (io/flipbook.py; docs/flipbooks.md): written at the end of the bake from the saved frames
    "flipbook": Key(Bool(), True, "write the game flipbook sheets (`flipbook_color/emissive/motion/normal.png`, "
                    "`flipbook.json`, `flipbook_preview.gif`) at the end of the bake"),
    "flipbook_layout": Key(Vector(2, "cells", lo=1, hi=64, integer=True, names="[rows, cols]"), [8, 8],
                           "cells of the sheet; frame 0 top-left, left to right, then top to bottom"),
    "flipbook_cell": Key(Int(8, MAX_GRID, unit="pixels", nullable=True), None,
                         "pixels of a cell along the domain's longer side (resampled from the grid)",
                         "null = the grid's own (`resolution`)"),
    "flipbook_range": Key(Vector(2, "frame numbers", integer=True, lo=-MAX_FRAME, hi=MAX_FRAME,
                                 names="[first, last]"), None,
                          "baked frames the sheet is taken from (inclusive)", "all baked frames"),
    "flipbook_step": Key(Int(1, MAX_FRAME, unit="frames", nullable=True), None,
                         "take every step-th frame of the range (the sheet plays at fps / step)",
                         "null = the smallest step that fits the range into rows x cols (+ loop) frames"),
    "flipbook_loop": Key(Int(0, 4096, unit="frames"), 0,
                         "seamless loop of L frames (`flipbook_loop_mode`): crossfade = the last L selected frames "
                         "are crossfaded (smoothstep) into the first L; two_phase = L-frame ramps on each side of "
                         "the seam; 0 = no loop"),
    "flipbook_loop_mode": Key(Choice("crossfade", "two_phase"), "two_phase",
                              "how the sheet loops: two_phase (the frames blended with themselves half a loop "
                              "later, no extra frames, the seam is a step from the middle of the range: below the "
                              "mean frame-to-frame step on the 128² plume, docs/flipbooks.md) or crossfade (L extra "
                              "frames, the seam is the range's last step: above the mean while a plume accelerates)"),
    "flipbook_alpha": Key(Choice("straight", "premultiplied"), "straight",
                          "alpha of flipbook_color.png: straight (RGB = smoke colour) or premultiplied (RGB x A)"),
    "flipbook_engine": Key(Choice("unity", "unreal"), "unity",
                           "motion-vector and normal-map green axis: unity = +v up (Unity UV, OpenGL normals), "
                           "unreal = +v down (Unreal UV, DirectX normals)"),
    "flipbook_motion_bits": Key(Int(8, 16, unit="bits"), 16, "bits per channel of flipbook_motion.png: 8 or 16"),
    "flipbook_motion_scale": Key(Number(0, lo_open=True, unit="cell UV per frame", nullable=True), None,
                                 "the motion vectors' scale (Unity: Motion Vector Scale; Unreal: strength): "
                                 "a channel at 1.0 (or 0.0) is this displacement",
                                 "null = the largest displacement, rounded up to 3 digits"),
    "flipbook_normal_strength": Key(Number(0, unit="cell widths"), 0.05,
                                    "height of full density in the normal map's height field"),
}
# ---- 3-D smoke (issue #28): a spec whose `resolution` has 3 entries ----------------------------------
# World axes as in Blender (z up); the grid is [depth (world y), rows (world z, row 0 = top), cols (world x)].
SHAPE3D = Object("shape", {"center": Key(_V3, required=True, doc="[x, y, z] metres (world)")}, tag="type", variants={
    "sphere": {"radius": Key(Number(0, lo_open=True, unit="metres"), required=True)},
    "box": {"half_extents": Key(Vector(3, "metres", lo=0, lo_open=True, names="[hx, hy, hz]"), required=True)},
    "mesh": {"vertices": Key(Array("V x 3 positions (metres, relative to `center`)", nullable=False, path_ok=True),
                             required=True),
             "faces": Key(Array("T x 3 vertex indices", integer=True, nullable=False, path_ok=True, lo=0),
                          required=True)}})
_SHAPES_DOC = ('`{"type": "sphere", "center": [x,y,z], "radius": r}`, `{"type": "box", "center": ..., '
               '"half_extents": [hx,hy,hz]}` or `{"type": "mesh", "center": ..., "vertices": V x 3, "faces": T x 3}` '
               '(a closed triangle mesh, voxelized by trimesh), metres, world axes (z up); static')

SMOKE3D_SCHEMA: Dict[str, Key] = {
    "resolution": Key(Vector(3, "cells", lo=16, hi=1024, integer=True, names="[depth, rows, cols]"), None,
                      "cells of the 3D domain (cubes): depth along world y, rows along world z (row 0 = top), "
                      "cols along world x", "required: 3 entries make a smoke spec 3-D"),
    "size_m": Key(Number(0, lo_open=True, unit="metres"), 1.0,
                  "length of the domain's longest side: a cell is size_m / max(depth, rows, cols)",
                  "`1.0`, or `cell_size` * max(depth, rows, cols) when only `cell_size` is given"),
    "cell_size": Key(Number(0, lo_open=True, unit="metres", nullable=True), None,
                     "edge of a cell (the VDB voxel size); given with `size_m`, the two must agree",
                     "size_m / max(depth, rows, cols)"),
    "origin": Key(Vector(3, "metres", names="[x, y, z]"), [0.0, 0.0, 0.0],
                  "world position of the domain's min corner (the VDB grids' origin)"),
    "frames": SMOKE_SCHEMA["frames"],
    "fps": SMOKE_SCHEMA["fps"],
    "start_frame": SMOKE_SCHEMA["start_frame"],
    "substeps": SMOKE_SCHEMA["substeps"],
    "cfl": SMOKE_SCHEMA["cfl"],
    "emitters": Key(ListOf(SHAPE3D, "shapes"), None, "where density (and heat) is injected: " + _SHAPES_DOC
                    + "; a cell's rate is scaled by the fraction of it the shape covers",
                    "a sphere at the bottom centre (radius 0.1 of the shortest side)"),
    "obstacles": Key(ListOf(SHAPE3D, "shapes"), None, "solid shapes (cells at least half covered): " + _SHAPES_DOC,
                     "none"),
    "emitter_density": SMOKE_SCHEMA["emitter_density"],
    "emitter_velocity": Key(Vector(3, "m/s", names="[vx, vy, vz]"), [0.0, 0.0, 0.0],
                            "emitters speed the flow inside them up to this velocity, per axis (0: no push)"),
    "buoyancy": SMOKE_SCHEMA["buoyancy"],
    "viscosity": SMOKE_SCHEMA["viscosity"],
    "density_diffusion": SMOKE_SCHEMA["density_diffusion"],
    "wind": Key(Vector(3, "m/s^2", names="[x, y, z]"), [0.0, 0.0, 0.0], "uniform acceleration"),
    "emitter_heat": SMOKE_SCHEMA["emitter_heat"],
    "heat_buoyancy": SMOKE_SCHEMA["heat_buoyancy"],
    "cooling": SMOKE_SCHEMA["cooling"],
    "iterations_per_step": SMOKE_SCHEMA["iterations_per_step"],
    "tol": Key(Number(0, lo_open=True, unit="mean squared residual", nullable=True), 1e-10,
               "iterate each fluid step until its mean squared residual (grid units) is below this, up to "
               "`max_iterations`; null = `iterations_per_step` per step"),
    "max_iterations": Key(Int(1), 60, "iteration cap per fluid step with `tol`"),
    "vdb": Key(Bool(), True, "write OpenVDB files (`density`, `temperature` with `emitter_heat`, `velocity` (m/s))"),
}
# 2-D keys a 3-D spec does not take: refused with what replaces them
SMOKE3D_REMOVED = {
    "obstacle_shapes": "a 2-D key: 3-D obstacles are `obstacles`, a list of shapes in metres",
    "png_max": "a 2-D key: 3-D bakes write VDB and NPZ volumes (and a preview of the projected density), no PNGs",
    **{k: "a 2-D key: 3-D bakes write no game flipbook" for k in SMOKE_SCHEMA if k.startswith("flipbook")},
}


def is_3d_smoke(spec) -> bool:
    """A smoke spec is 3-D when its ``resolution`` has 3 entries."""
    return isinstance(spec, dict) and isinstance(spec.get("resolution"), (list, tuple)) and len(spec["resolution"]) == 3


# Keys of the grid-unit smoke: refused with what became of them (issue #27)
SMOKE_REMOVED = {
    "density_tol": "this key was removed: the density transport is explicit and monotone now (no linear solve, "
                   "so no tolerance)",
}

SCHEMAS = {"cloth": CLOTH_SCHEMA, "smoke": SMOKE_SCHEMA, "smoke3d": SMOKE3D_SCHEMA}
REMOVED_KEYS = {"cloth": RENAMED, "smoke": SMOKE_REMOVED, "smoke3d": SMOKE3D_REMOVED}  # refused, with what became of them


def defaults(kind: str) -> dict:
    """The schema defaults of ``kind`` (None where the default is computed from other keys)."""
    return {k: (list(v.default) if isinstance(v.default, list) else v.default) for k, v in SCHEMAS[kind].items()}


# ---- cross-key checks -------------------------------------------------------------------------------
def _cloth_cross(p: dict, given: dict, errors: list) -> None:
    rows, cols = p["rows"], p["cols"]
    nv = rows * cols

    def shape_err(key, expected, arr):
        errors.append(Invalid(key, f"expected {expected}, got shape {list(np.shape(arr))}"))

    if p["rest_positions"] is not None and p["rest_positions"].shape != (nv, 3):
        shape_err("rest_positions", f"shape [{nv}, 3] (rows*cols = {rows}*{cols}, xyz)", p["rest_positions"])
    vi = p["vertex_index"]
    if vi is not None:
        if vi.shape != (nv,):
            shape_err("vertex_index", f"{nv} integers (rows*cols)", vi)
        elif not np.array_equal(np.sort(vi), np.arange(nv)):
            errors.append(Invalid("vertex_index", f"expected a permutation of 0..{nv - 1} (one mesh vertex per "
                                                   "grid vertex), got repeated or out-of-range indices"))
    om = p["output_matrix"]
    if om is not None and not (om.shape == (4, 4) or (om.ndim == 3 and om.shape[1:] == (4, 4) and len(om))):
        shape_err("output_matrix", "shape [4, 4] or [frames, 4, 4]", om)
    pw = p["pin_weights"]
    if pw is not None and pw.shape != (nv,):
        shape_err("pin_weights", f"{nv} numbers (rows*cols)", pw)
    pt = p["pin_targets"]
    if pt is not None and not (pt.shape == (nv, 3) or (pt.ndim == 3 and pt.shape[1:] == (nv, 3) and len(pt))):
        shape_err("pin_targets", f"shape [{nv}, 3] or [frames, {nv}, 3]", pt)
    if p["tol"] is None and p["solver"] != "metamizer":
        errors.append(Invalid("tol", f"null is only allowed with solver \"metamizer\" (solver "
                                      f"{json.dumps(p['solver'])} needs a tolerance), got null"))


def _smoke_scale(p: dict, given: dict, errors: list) -> None:
    """Fill in ``size_m`` and ``cell_size`` from each other (a spec may give either, or both if they agree)."""
    cells = max(p["resolution"])
    if p["cell_size"] is None:
        p["cell_size"] = p["size_m"] / cells
    elif "size_m" not in given:
        p["size_m"] = p["cell_size"] * cells
    elif abs(p["cell_size"] * cells - p["size_m"]) > 1e-9 * p["size_m"]:
        errors.append(Invalid("cell_size", f"expected size_m / max(rows, cols) = {p['size_m'] / cells:.6g} metres "
                                           f"(or no cell_size), got {p['cell_size']:.6g}"))


def _flipbook_cross(p: dict, errors: list) -> None:
    if p["flipbook_motion_bits"] not in (8, 16):
        errors.append(Invalid("flipbook_motion_bits", f"expected 8 or 16, got {p['flipbook_motion_bits']}"))
    rng = p["flipbook_range"]
    if rng is not None:
        last = p["start_frame"] + p["frames"] - 1
        if not p["start_frame"] <= rng[0] <= rng[1] <= last:
            errors.append(Invalid("flipbook_range", f"expected [first, last] with {p['start_frame']} <= first <= "
                                                    f"last <= {last} (the baked frames), got {rng}"))
    rows, cols = p["flipbook_layout"]
    loop, two_phase = p["flipbook_loop"], p["flipbook_loop_mode"] == "two_phase"
    most = rows * cols // 2 if two_phase else rows * cols  # two_phase: ramps of at most half the sheet
    if loop > most:
        errors.append(Invalid("flipbook_loop", f"expected at most {most} frames ({'half ' if two_phase else ''}the "
                                               f"sheet's cells) for a {rows} x {cols} sheet with flipbook_loop_mode "
                                               f"{p['flipbook_loop_mode']}, got {loop}"))


def _smoke_cross(p: dict, given: dict, errors: list) -> None:
    h, w = p["resolution"]
    _smoke_scale(p, given, errors)
    _flipbook_cross(p, errors)
    for key in ("emitters", "obstacles"):
        v = p[key]
        if v is None:
            continue
        arr = np.load(v) if isinstance(v, str) else v
        if arr.ndim not in (2, 3) or arr.shape[-2:] != (h, w):
            errors.append(Invalid(key, f"expected shape [{h}, {w}] or [frames, {h}, {w}], "
                                        f"got shape {list(arr.shape)}"))
        elif arr.size and (arr.min() < 0 or arr.max() > 1):
            errors.append(Invalid(key, f"expected values in [0, 1], got range [{arr.min():g}, {arr.max():g}]"))


def mesh_shape_problem(shape: dict):
    """(key, message) of a mesh shape whose arrays do not fit each other, else None (the spec's cross
    check; SmokeSim3D uses it on its arguments too)."""
    v, f = (np.load(shape[k], allow_pickle=False) if isinstance(shape[k], str) else np.asarray(shape[k])
            for k in ("vertices", "faces"))
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4:
        return "vertices", f"expected shape [V >= 4, 3], got shape {list(v.shape)}"
    if f.ndim != 2 or f.shape[1] != 3 or len(f) < 4:
        return "faces", f"expected shape [T >= 4, 3] (a closed mesh), got shape {list(f.shape)}"
    if f.max() >= len(v):
        return "faces", f"expected vertex indices < {len(v)} (the vertices), got {int(f.max())}"
    return None


def _smoke3d_cross(p: dict, given: dict, errors: list) -> None:
    _smoke_scale(p, given, errors)
    for key in ("emitters", "obstacles"):
        for i, shape in enumerate(p[key] or []):
            problem = mesh_shape_problem(shape) if shape["type"] == "mesh" else None
            if problem is not None:
                errors.append(Invalid(f"{key}[{i}].{problem[0]}", problem[1]))


def validate(kind: str, spec: Any, size: Optional[int] = None) -> dict:
    """Validate ``spec`` against ``kind``'s schema; return the parameters with every default filled in.

    ``size`` is the `--size` default for the grid. Raises SpecError listing every problem.
    """
    if kind not in SCHEMAS:
        raise ValueError(f"kind must be 'cloth', 'smoke' or 'smoke3d', got {kind!r}")
    if kind == "smoke" and is_3d_smoke(spec):
        kind = "smoke3d"
    if not isinstance(spec, dict):
        raise SpecError(kind, [f"the spec must be a JSON object, got {show(spec)}"])
    if check_depth(spec) > MAX_DEPTH:  # deeper values would exhaust the recursion of json/numpy below
        raise SpecError(kind, [f"the spec nests more than {MAX_DEPTH} levels deep (its deepest value, a "
                               "per-frame collider centre, nests 5)"])
    schema = SCHEMAS[kind]
    errors: list = []
    p: dict = {}
    for k in spec:
        if k not in schema:
            errors.append(unknown_key(k, schema, "", REMOVED_KEYS[kind]))
    for k, key in schema.items():
        if k not in spec:
            p[k] = defaults(kind)[k]
            continue
        try:
            p[k] = key.type.check(spec[k], k)
        except Invalid as e:
            errors.append(e)
            p[k] = None
        except Many as many:
            errors.extend(many.errors)
            p[k] = None
    if not errors:
        if kind == "cloth":
            size = 32 if size is None else size
            p["rows"] = p["rows"] if p["rows"] is not None else size
            p["cols"] = p["cols"] if p["cols"] is not None else p["rows"]
            _cloth_cross(p, spec, errors)
        elif kind == "smoke3d":
            if p["resolution"] is None:
                errors.append(Invalid("resolution", "missing (expected [depth, rows, cols]: a 3-D smoke spec "
                                                    "gives its grid)"))
            else:
                _smoke3d_cross(p, spec, errors)
        else:
            size = 128 if size is None else size
            p["resolution"] = p["resolution"] if p["resolution"] is not None else [size, size]
            _smoke_cross(p, spec, errors)
    if not errors:
        _frame_range(p, errors)
    if errors:
        raise SpecError(kind, [f"{e.path}: {e.message}" for e in errors])
    return p


def _frame_range(p: dict, errors: list) -> None:
    last = p["start_frame"] + p["frames"] - 1
    if last > MAX_FRAME:
        errors.append(Invalid("frames", f"expected start_frame + frames - 1 <= {MAX_FRAME} (Blender's last "
                                        f"frame), got start_frame {p['start_frame']} + {p['frames']} frames"))


# ---- UI limits ------------------------------------------------------------------------------------------
def property_limits(kind: str) -> dict:
    """Per numeric/bool/choice key: default, min/max (with whether they are exclusive), unit and
    description, for UIs such as the Blender add-on's properties (which cannot import metaphys)."""
    out = {}
    for name, key in SCHEMAS[kind].items():
        t = key.type
        d = {"default": key.default, "description": key.doc, "type": type(t).__name__}
        if isinstance(t, Number):
            d.update(type="int" if t.integer else "float", min=t.lo, max=t.hi, min_exclusive=t.lo_open,
                     max_exclusive=t.hi_open, unit=t.unit, nullable=t.nullable)
        elif isinstance(t, Vector):
            d.update(type="vector", size=t.n, min=t.lo, max=t.hi, min_exclusive=t.lo_open, unit=t.unit)
        elif isinstance(t, Choice):
            d.update(type="choice", options=list(t.options))
        elif isinstance(t, Bool):
            d.update(type="bool")
        else:
            continue  # arrays and nested objects come from the scene, not from a property
        out[name] = d
    return out


# ---- docs ---------------------------------------------------------------------------------------------
def _default_text(key: Key) -> str:
    if key.default_doc is not None:
        return key.default_doc
    if key.default is None:
        return "null"
    return f"`{json.dumps(key.default)}`"


def markdown_table(kind: str) -> str:
    rows = ["| key | type and range | default | meaning |", "|---|---|---|---|"]
    for name, key in SCHEMAS[kind].items():
        desc = key.type.describe().replace("|", "\\|")
        rows.append(f"| `{name}` | {desc} | {_default_text(key)} | {key.doc.replace('|', chr(92) + '|')} |")
    for old, msg in REMOVED_KEYS[kind].items():
        rows.append(f"| ~~`{old}`~~ | refused | | {msg.replace(chr(34), '`')} |")
    return "\n".join(rows) + "\n"


def _markers(kind: str) -> Tuple[str, str]:
    return (f"<!-- BEGIN {kind} spec table: generated by `python -m metaphys.spec.schema --write-docs` -->",
            f"<!-- END {kind} spec table -->")


def render_docs(text: str) -> str:
    """``text`` (docs/bake-spec.md) with each generated table replaced by the schema's rendering."""
    for kind in SCHEMAS:
        begin, end = _markers(kind)
        a, b = text.find(begin), text.find(end)
        if a < 0 or b < a:
            raise ValueError(f"docs/bake-spec.md lacks the markers {begin!r} ... {end!r}")
        text = text[:a + len(begin)] + "\n" + markdown_table(kind) + text[b:]
    return text


def docs_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "docs", "bake-spec.md")


def update_docs(path: Optional[str] = None, check: bool = False) -> bool:
    """Regenerate the spec tables in docs/bake-spec.md; with ``check``, only report whether it is current."""
    path = path or docs_path()
    with open(path, encoding="utf-8") as fh:
        old = fh.read()
    new = render_docs(old)
    if check or new == old:
        return new == old
    from metaphys.io.atomic import atomic_write_text
    atomic_write_text(path, new)
    return True


if __name__ == "__main__":
    import sys
    if "--limits" in sys.argv:  # JSON for UIs: python -m metaphys.spec.schema --limits
        print(json.dumps({k: property_limits(k) for k in SCHEMAS}, indent=1))
        sys.exit(0)
    if "--check" in sys.argv:
        ok = update_docs(check=True)
        print("docs/bake-spec.md is up to date" if ok else "docs/bake-spec.md is out of date: run "
              "python -m metaphys.spec.schema --write-docs")
        sys.exit(0 if ok else 1)
    update_docs()
    print(f"updated {docs_path()}")
