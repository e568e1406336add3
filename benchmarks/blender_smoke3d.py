"""Blender's own Mantaflow smoke on benchmarks/smoke3d.py's plume: the speed anchor of the 3-D smoke.

Runs in Blender as a Python module (bpy 5.0.1, `make test-blender` installs it into .venv):

    python benchmarks/blender_smoke3d.py --size 32 --frames 48 [--params JSON]
prints one JSON line: {"size", "frames", "ms" (wall per frame), "cpu_ms" (process CPU per frame),
"ms_per_frame" (median), "ms_max", "cpu_ms_per_frame", "centroid_m", "max_density", "cells", "version"}.

The same scene as SmokeSim3D's default plume where Blender has a counterpart: a gas domain that is a
cube of ``size_m`` metres with ``size`` cells along each side (``resolution_max``), closed on all sides,
``fps``; a UV sphere emitter (radius 0.1 of the side, centred 0.15 of the height above the floor) that
is a smoke inflow of density 1 and no heat; the density buoyancy ``alpha`` set so that alpha * |g| is
SmokeSim3D's ``buoyancy`` (m/s^2 per unit density), heat buoyancy off, no vorticity, no dissolve.
What differs and cannot be matched: Mantaflow's inflow sets the emitter's cells to the flow density
each step instead of adding ``emitter_density`` per second, its viscosity is off (an inviscid solver
at this resolution), and it takes its own adaptive sub-steps (CFL 4, 1-4 per frame: its defaults).
The simulation runs as frames advance (``frame_set``, cache type REPLAY), so the time of each frame
change is the time of one simulated frame.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np

DEFAULTS = {"size_m": 1.0, "fps": 24.0, "buoyancy": 4.0}

# Mantaflow's classes and their C++ bases (Mantaflow's own hierarchy), parents first
MANTA_BASES = [("GridBase", "PbClass"), ("Grid_Real", "GridBase"), ("Grid_Vec3", "GridBase"), ("Grid_int", "GridBase"),
               ("LevelsetGrid", "Grid_Real"), ("MACGrid", "Grid_Vec3"), ("FlagGrid", "Grid_int"),
               ("Grid4dBase", "PbClass"), ("Grid4d_Real", "Grid4dBase"), ("Grid4d_Vec3", "Grid4dBase"),
               ("Grid4d_Vec4", "Grid4dBase"), ("Grid4d_int", "Grid4dBase"),
               ("Shape", "PbClass"), ("Box", "Shape"), ("Sphere", "Shape"), ("Cylinder", "Shape"), ("Slope", "Shape"),
               ("NullShape", "Shape"), ("ParticleBase", "PbClass"),
               ("ParticleSystem_BasicParticleData", "ParticleBase"), ("ParticleSystem_ParticleIndexData", "ParticleBase"),
               ("ParticleSystem_TurbulenceParticleData", "ParticleBase"),
               ("ParticleSystem_VortexParticleData", "ParticleBase"),
               ("BasicParticleSystem", "ParticleSystem_BasicParticleData"),
               ("ParticleIndexSystem", "ParticleSystem_ParticleIndexData"),
               ("TurbulenceParticleSystem", "ParticleSystem_TurbulenceParticleData"),
               ("VortexParticleSystem", "ParticleSystem_VortexParticleData"),
               ("ParticleDataBase", "PbClass"), ("ParticleDataImpl_Real", "ParticleDataBase"),
               ("ParticleDataImpl_Vec3", "ParticleDataBase"), ("ParticleDataImpl_int", "ParticleDataBase"),
               ("Mesh", "PbClass"), ("VortexSheetMesh", "Mesh"), ("MeshDataBase", "PbClass"),
               ("MeshDataImpl_Real", "MeshDataBase"), ("MeshDataImpl_Vec3", "MeshDataBase"),
               ("MeshDataImpl_int", "MeshDataBase"), ("Solver", "PbClass"), ("MovingObstacle", "PbClass"),
               ("NoiseField", "PbClass"), ("Timings", "PbClass")]


def repair_manta_types() -> str:
    """The bpy 5.0.1 wheel registers Mantaflow's Python classes without their C++ base classes (every
    one derives from ``object`` alone), so its own smoke script fails at the first inherited method
    ('LevelsetGrid' object has no attribute 'setConst'; the headless-Mantaflow bug reported e.g. in
    princeton-vl/infinigen#318) and no frame is simulated. The types are immutable C types, so their
    base, bases and MRO slots are rewritten in place (found by their current values, so no CPython
    struct layout is assumed) and the type caches invalidated. Returns what was done."""
    import ctypes
    import manta
    if hasattr(manta.LevelsetGrid, "setConst"):
        return "not needed"
    fixed = []
    for child_name, parent_name in MANTA_BASES:
        child, parent = getattr(manta, child_name, None), getattr(manta, parent_name, None)
        if child is None or parent is None or child.__bases__ != (object,):
            continue
        words = (ctypes.c_void_p * 64).from_address(id(child))
        slots = {}
        for key, value in (("mro", id(child.__mro__)), ("bases", id(child.__bases__)), ("base", id(object))):
            hits = [i for i in range(64) if words[i] == value]
            if len(hits) != 1:
                raise RuntimeError(f"cannot repair Mantaflow's {child_name}: its {key} slot is not unique ({hits})")
            slots[key] = hits[0]
        mro, bases = (child,) + parent.__mro__, (parent,)
        for t in (mro, bases):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(t))   # owned by the type from now on
        words[slots["mro"]], words[slots["bases"]], words[slots["base"]] = id(mro), id(bases), id(parent)
        ctypes.pythonapi.PyType_Modified(ctypes.py_object(child))
        fixed.append(child_name)
    if not hasattr(manta.LevelsetGrid, "setConst"):
        raise RuntimeError("Mantaflow's classes could not be repaired (LevelsetGrid still lacks setConst)")
    return f"rebased {len(fixed)} Mantaflow classes"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build(bpy, n: int, frames: int, p: dict, cache: str):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = int(round(p["fps"]))
    scene.frame_start, scene.frame_end = 1, frames + 1
    size = p["size_m"]
    bpy.ops.mesh.primitive_cube_add(size=size, location=(0.5 * size, 0.5 * size, 0.5 * size))
    domain = bpy.context.object
    domain.name = "domain"
    mod = domain.modifiers.new("Fluid", "FLUID")
    mod.fluid_type = "DOMAIN"
    ds = mod.domain_settings
    ds.domain_type = "GAS"
    ds.resolution_max = n
    ds.cache_type = "REPLAY"
    ds.cache_directory = cache
    ds.cache_frame_start, ds.cache_frame_end = 1, frames + 1
    g = abs(scene.gravity[2]) or 9.81
    ds.alpha = p["buoyancy"] / g      # density buoyancy: alpha * |g| m/s^2 per unit density
    ds.beta = 0.0                     # no heat
    ds.vorticity = 0.0
    ds.use_dissolve_smoke = False
    for side in ("front", "back", "right", "left", "top", "bottom"):
        setattr(ds, f"use_collision_border_{side}", True)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.1 * size, location=(0.5 * size, 0.5 * size, 0.15 * size))
    emitter = bpy.context.object
    emitter.name = "emitter"
    fm = emitter.modifiers.new("Fluid", "FLUID")
    fm.fluid_type = "FLOW"
    fs = fm.flow_settings
    fs.flow_type = "SMOKE"
    fs.flow_behavior = "INFLOW"
    fs.flow_source = "MESH"
    fs.density = 1.0
    fs.temperature = 0.0
    emitter.hide_render = True
    return scene, domain


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--params", default="{}", help="JSON: size_m, fps, buoyancy (SmokeSim3D's units)")
    args = ap.parse_args(argv)
    try:
        import bpy
    except ImportError:
        print("bpy is not installed (make test-blender installs bpy==5.0.1 into .venv)", file=sys.stderr)
        return 2
    p = dict(DEFAULTS, **json.loads(args.params))
    repair = repair_manta_types()
    with tempfile.TemporaryDirectory(prefix="metaphys_manta_") as cache:
        scene, domain = build(bpy, args.size, args.frames, p, cache)
        scene.frame_set(1)
        times, cpus, heights = [], [], []
        dens = None
        for f in range(2, args.frames + 2):
            t0, c0 = time.perf_counter(), cpu_s()
            scene.frame_set(f)                 # the frame's simulation (read back below, not timed)
            times.append(time.perf_counter() - t0)
            cpus.append(cpu_s() - c0)
            ev = domain.evaluated_get(bpy.context.evaluated_depsgraph_get())
            ds = ev.modifiers["Fluid"].domain_settings
            dens = np.array(ds.density_grid, dtype=np.float64)
            heights.append(centroid(dens, tuple(ds.domain_resolution), p["size_m"]))
        res = tuple(ds.domain_resolution)
    print(json.dumps({"size": args.size, "frames": args.frames, "cells": list(res),
                      "ms": [1e3 * t for t in times], "cpu_ms": [1e3 * c for c in cpus],
                      "ms_per_frame": 1e3 * statistics.median(times), "ms_max": 1e3 * max(times),
                      "cpu_ms_per_frame": 1e3 * statistics.median(cpus), "centroid_m": heights,
                      "max_density": float(dens.max()) if dens is not None and dens.size else 0.0,
                      "min_density": float(dens.min()) if dens is not None and dens.size else 0.0, "version": bpy.app.version_string,
                      "threads": os.cpu_count(), "manta_repair": repair}), flush=True)
    return 0


def centroid(dens, res, size: float) -> float:
    """Density centroid height (m above the domain's floor); Blender's grid is x fastest, then y, then z."""
    nx, ny, nz = res
    if dens.size != nx * ny * nz:
        return float("nan")
    w = dens.reshape(nz, ny, nx).sum(axis=(1, 2))
    total = float(w.sum())
    return float((w * (np.arange(nz) + 0.5) * size / nz).sum()) / total if total > 0 else 0.0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # skip the interpreter's teardown: Mantaflow aborts there ("can't clean grid cache, some grids are
    # still in use") after the results are printed
    os._exit(code)
