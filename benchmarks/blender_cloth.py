"""Blender's own cloth on the scenes of benchmarks/cloth_accuracy.py (issue #12) and of
benchmarks/cloth_scenes.py (issue #26: cape, slope_muX, fold, and "<scene>:no_self"): the speed anchor.

Runs in Blender as a Python module (bpy 5.0.1, `make test-blender` installs it into .venv):

    python benchmarks/blender_cloth.py --size 32 --frames 12 --scenes drape curtain
prints one JSON line per scene: {"scene", "size", "frames", "ms": median ms per frame, "quality"}.

The same geometry as ClothSim's scenes (1 m cloth, n x n vertices, the same pins and sphere
colliders; wind is left out: Blender models it as a force field with its own units); Blender's
default cloth material and quality 5 (its default). The cloth is simulated as frames advance
(`frame_set`), so the time of each frame change is the time of one simulated frame.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def grid(n: int, plane: str):
    """Vertices of a 1 m square, row-major like ClothSim's flat_cloth, and its quads."""
    verts = []
    for i in range(n):
        for j in range(n):
            x, t = j / (n - 1) - 0.5, i / (n - 1)
            verts.append((x, t - 0.5, 1.0) if plane == "xy" else (x, 0.0, 1.0 - t))
    faces = [(i * n + j, i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j)
             for i in range(n - 1) for j in range(n - 1)]
    return verts, faces


def build_real(bpy, name: str, n: int, frames: int, quality: int):
    """A scene of benchmarks/cloth_scenes.py (cape, slope_muX, fold; "<scene>:no_self" with its
    self-collision off) in Blender: the same rest mesh, pins, colliders and self-collision
    (Blender's friction is its own unit: left at its default). The cape's body is a deforming mesh
    with one shape key per frame (each at full weight on its frame only); its pins walk with the body
    because the cloth object moves (Blender's pinned vertices follow their object), keyed every frame."""
    import math
    import os
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cloth_scenes import scene as real_scene
    base, _, variant = name.partition(":")
    kw = real_scene(base, n, frames)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames + 1
    rest = [tuple(map(float, p)) for p in kw["rest_positions"]]
    faces = [(i * n + j, i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j)
             for i in range(n - 1) for j in range(n - 1)]
    mesh = bpy.data.meshes.new("cloth")
    mesh.from_pydata(rest, [], faces)
    obj = bpy.data.objects.new("cloth", mesh)
    scene.collection.objects.link(obj)
    pins = [k for k, w in enumerate(kw["pin_weights"]) if w > 0]
    mod = obj.modifiers.new("Cloth", "CLOTH")
    if pins:
        group = obj.vertex_groups.new(name="pin")
        group.add(pins, 1.0, "REPLACE")
        mod.settings.vertex_group_mass = "pin"
    mod.settings.quality = quality
    mod.collision_settings.use_self_collision = bool(kw.get("self_collision")) and variant != "no_self"
    mod.point_cache.frame_start, mod.point_cache.frame_end = 1, frames + 1
    targets = kw.get("pin_targets")
    if targets is not None:
        # cloth_scenes' pin targets are the rest shape translated per frame: the object's motion
        shift = targets[:, 0] - targets[0, 0]
        if not all(abs(float(x)) < 1e-12 for x in (targets - targets[0] - shift[:, None]).ravel()):
            raise ValueError(f"{name}: Blender's pins follow their object; pin targets that deform are not expressible")
        for k, d in enumerate(shift):
            obj.location = tuple(map(float, d))
            obj.keyframe_insert("location", frame=k + 1)
    for c in kw.get("colliders", []):
        if c["type"] == "box":
            bpy.ops.mesh.primitive_cube_add(size=2.0, location=tuple(c["center"]),
                                            rotation=tuple(math.radians(a) for a in c.get("rotation", [0, 0, 0])),
                                            scale=tuple(c["half_extents"]))
            bpy.context.object.modifiers.new("Collision", "COLLISION")
        elif c["type"] == "mesh":
            deforming_mesh(bpy, scene, c["vertices"], c["faces"], c["center"])
        else:
            raise ValueError(f"{name}: collider type {c['type']!r} has no Blender counterpart here")
    return scene


def deforming_mesh(bpy, scene, track, faces, center):
    """A collision object whose vertices follow ``track`` [frames+1, V, 3] (frame k at Blender frame
    k + 1): a basis plus one shape key per frame, keyed 1 on its frame and 0 on its neighbours."""
    me = bpy.data.meshes.new("body")
    me.from_pydata([tuple(map(float, v)) for v in track[0]], [], [tuple(map(int, f)) for f in faces])
    body = bpy.data.objects.new("body", me)
    scene.collection.objects.link(body)
    body.location = tuple(map(float, center))
    body.shape_key_add(name="basis", from_mix=False)
    for k, V in enumerate(track):
        key = body.shape_key_add(name=f"f{k}", from_mix=False)
        key.data.foreach_set("co", [float(x) for x in V.ravel()])
        for f, value in ((k, 0.0), (k + 1, 1.0), (k + 2, 0.0)):
            if f >= 1:
                key.value = value
                key.keyframe_insert("value", frame=f)
    body.modifiers.new("Collision", "COLLISION")
    return body


def build(bpy, name: str, n: int, frames: int, quality: int):
    if name.split(":")[0] in ("cape", "fold") or name.startswith("slope"):
        return build_real(bpy, name, n, frames, quality)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames + 1
    plane = "xy" if name in ("drape", "stiff_bend") else "xz"
    verts, faces = grid(n, plane)
    mesh = bpy.data.meshes.new("cloth")
    mesh.from_pydata(verts, [], faces)
    obj = bpy.data.objects.new("cloth", mesh)
    scene.collection.objects.link(obj)
    pins = [0, n - 1] if plane == "xy" else list(range(n))
    group = obj.vertex_groups.new(name="pin")
    group.add(pins, 1.0, "REPLACE")
    mod = obj.modifiers.new("Cloth", "CLOTH")
    mod.settings.vertex_group_mass = "pin"
    mod.settings.quality = quality
    if name == "stiff_bend":
        mod.settings.bending_stiffness *= 100
    mod.point_cache.frame_start, mod.point_cache.frame_end = 1, frames + 1
    spheres = []
    if name == "drape":
        spheres.append(((0.0, 0.15, 0.55), 0.25, None))
    if name == "moving_collider":
        spheres.append(((0.0, -0.4, 0.5), 0.15, [(0.0, -0.4 + 0.8 * k / frames, 0.5) for k in range(frames + 1)]))
    for center, radius, track in spheres:
        bm_mesh = bpy.data.meshes.new("sphere")
        import bmesh
        bm = bmesh.new()
        bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=radius)
        bm.to_mesh(bm_mesh)
        bm.free()
        sph = bpy.data.objects.new("sphere", bm_mesh)
        scene.collection.objects.link(sph)
        sph.location = center
        sph.modifiers.new("Collision", "COLLISION")
        if track:
            for k, loc in enumerate(track):
                sph.location = loc
                sph.keyframe_insert("location", frame=k + 1)
    return scene


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--scenes", nargs="+", default=["curtain", "stiff_bend", "drape", "moving_collider"])
    args = ap.parse_args(argv)
    try:
        import bpy
    except ImportError:
        print("bpy is not installed (make test-blender installs bpy==5.0.1 into .venv)", file=sys.stderr)
        return 2
    for name in args.scenes:
        scene = build(bpy, name, args.size, args.frames, args.quality)
        scene.frame_set(1)
        times = []
        for f in range(2, args.frames + 2):
            t0 = time.perf_counter()
            scene.frame_set(f)
            times.append(time.perf_counter() - t0)
        obj = bpy.data.objects["cloth"]
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        rest = [v.co.copy() for v in obj.data.vertices]
        moved = max((v.co - r).length for v, r in zip(evaluated.data.vertices, rest))
        print(json.dumps({"scene": name, "size": args.size, "frames": args.frames, "quality": args.quality,
                          "ms": 1000 * statistics.median(times), "ms_max": 1000 * max(times),
                          "max_displacement_m": moved}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
