"""Render docs/blender_cloth.png: metaphys cloth draped over a sphere collider, baked through the add-on.

    .venv/bin/python tests/blender/make_docs_render.py [--size 32] [--frames 48] [--samples 32]

Not a test (pytest does not collect it); it uses the same headless setup as the tests.
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import conftest  # noqa: E402  (registers the add-on in a private Blender user folder)
from conftest import REPO, add_grid, bpy, new_scene  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "blender_cloth.png"))
    ap.add_argument("--stub", action="store_true", help="bake with the protocol stub (framing checks only)")
    a = ap.parse_args()
    if a.stub:
        conftest.addon_prefs().metaphys_folder = conftest.STUB_ENGINE
    else:
        conftest.ensure_engine_weights(tempfile.mkdtemp(prefix="metaphys-weights-"))
    d = tempfile.mkdtemp(prefix="metaphys-docs-render-")
    scene = new_scene(d)
    scene.frame_end = a.frames
    import math
    # cloth: a square falling onto a sphere
    ob = add_grid(a.size, a.size, size=1.6, location=(0.0, 0.0, 1.25), pins=False)
    ob.name = "Cloth"
    ob.metaphys_cloth.bending = 1e-4
    ob.metaphys_cloth.air_damping = 0.5
    bpy.ops.object.shade_smooth()
    sub = ob.modifiers.new("Subdivision", "SUBSURF")
    sub.levels = sub.render_levels = 1
    sol = ob.modifiers.new("Solidify", "SOLIDIFY")
    sol.thickness = 0.008
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=(0.0, 0.0, 0.62), segments=48, ring_count=24)
    sph = bpy.context.object
    sph.name = "Ball"
    bpy.ops.object.shade_smooth()
    sph.metaphys_collider.enabled = True
    sph.metaphys_collider.shape = "SPHERE"
    bpy.ops.mesh.primitive_plane_add(size=8.0, location=(0.0, 0.0, 0.0))
    floor = bpy.context.object
    floor.metaphys_collider.enabled = True
    floor.metaphys_collider.shape = "BOX"

    t0 = time.monotonic()
    bpy.ops.metaphys.bake_cloth(object_name="Cloth")
    print(f"bake: {time.monotonic() - t0:.1f} s")

    def material(name, color, rough=0.6, sheen=0.0):
        m = bpy.data.materials.new(name)
        b = m.node_tree.nodes.get("Principled BSDF")
        b.inputs["Base Color"].default_value = (*color, 1.0)
        b.inputs["Roughness"].default_value = rough
        if sheen and "Sheen Weight" in b.inputs:
            b.inputs["Sheen Weight"].default_value = sheen
        return m
    ob.data.materials.append(material("Cloth", (0.75, 0.12, 0.08), 0.8, 0.5))
    sph.data.materials.append(material("Ball", (0.8, 0.8, 0.75), 0.3))
    floor.data.materials.append(material("Floor", (0.16, 0.17, 0.19), 0.9))

    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(cam)
    cam.location = (2.3, -2.5, 1.9)
    cam.rotation_euler = (math.radians(64), 0.0, math.radians(43))
    cam.data.lens = 45
    scene.camera = cam
    key = bpy.data.objects.new("Key", bpy.data.lights.new("Key", "AREA"))
    key.data.energy = 120.0
    key.data.size = 2.0
    key.location = (-1.5, -2.0, 3.0)
    key.rotation_euler = (math.radians(40), 0.0, math.radians(-35))
    scene.collection.objects.link(key)
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 0.8
    sun.rotation_euler = (math.radians(50), math.radians(10), math.radians(60))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("World")
    scene.world = world
    bg = world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (0.18, 0.2, 0.23, 1.0)
    bg.inputs["Strength"].default_value = 0.6

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = a.samples
    scene.cycles.use_denoising = True
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 480, 360, 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.compression = 90
    scene.render.filepath = a.out
    scene.frame_set(a.frames)
    t0 = time.monotonic()
    try:
        bpy.ops.render.render(write_still=True)
    except RuntimeError:  # no OpenImageDenoise in this build
        scene.cycles.use_denoising = False
        bpy.ops.render.render(write_still=True)
    print(f"render: {time.monotonic() - t0:.1f} s -> {a.out}")


if __name__ == "__main__":
    main()
