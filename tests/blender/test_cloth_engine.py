"""Cloth bakes with the real engine: the Mesh Cache result equals metaphys.sims.ClothSim on the
same spec, Cycles renders it, free restores the mesh, Esc (cancel) keeps the previous cache."""
import json
import os
import shutil
import time

import numpy as np
import pytest

from conftest import add_grid, addon_module, bpy, evaluated_world, needs_cloth_engine, new_scene

pytestmark = needs_cloth_engine

FRAMES = 10


@pytest.fixture(scope="module")
def baked(tmp_path_factory, engine_weights):
    """A saved scene with a 16 x 16 grid (two pinned corners) baked for 10 frames; returns its folder."""
    d = str(tmp_path_factory.mktemp("cloth"))
    scene = new_scene(d)
    scene.frame_end = FRAMES
    ob = add_grid(16, 16, size=1.0, location=(0.0, 0.0, 1.2))
    ob.rotation_euler = (0.0, 0.0, 0.3)  # a non-trivial object transform: the cache is object-local
    t0 = time.monotonic()
    bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    print(f"cloth bake ({FRAMES} frames, 16x16) took {time.monotonic() - t0:.1f} s")
    bpy.ops.wm.save_mainfile()
    return d


def _open_copy(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    bpy.ops.wm.open_mainfile(filepath=os.path.join(dst, "scene.blend"))
    return bpy.data.objects["Grid"]


def test_cloth_bake_matches_python_api(baked, tmp_path):
    from metaphys.sims import ClothSim
    ob = _open_copy(baked, str(tmp_path))
    d = os.path.join(str(tmp_path), "metaphys_cache", "Grid")
    spec = json.load(open(os.path.join(d, "bake_spec.json")))
    assert (spec["rows"], spec["cols"]) == (16, 16) and spec["frames"] == FRAMES
    md = ob.modifiers["metaphys cloth"]
    assert md.type == "MESH_CACHE" and md.cache_format == "PC2" and md.frame_start == 1.0
    assert md.filepath == "//metaphys_cache/Grid/cloth.pc2"
    ref = np.asarray(ClothSim.from_spec(spec).run(FRAMES), dtype=np.float64)
    assert ref.shape == (FRAMES, 256, 3)
    vidx = np.asarray(spec["vertex_index"])
    for frame in (1, 5, FRAMES):
        got = evaluated_world(ob, frame)[vidx]
        assert np.abs(got - ref[frame - 1]).max() < 1e-5, frame
    # the cloth moved, the pins did not
    rest = np.asarray(spec["rest_positions"])
    moved = np.linalg.norm(ref[-1] - rest, axis=1)
    pinned = np.asarray(spec["pin_weights"]) > 0
    assert moved[~pinned].max() > 1e-3 and moved[pinned].max() < 1e-4
    # free bake: modifier and files gone, the mesh is the original
    orig = np.array([ob.matrix_world @ v.co for v in ob.data.vertices])
    bpy.ops.metaphys.free_cloth(object_name=ob.name)
    assert "metaphys cloth" not in ob.modifiers and not os.path.exists(d)
    assert np.abs(evaluated_world(ob, FRAMES) - orig).max() < 1e-6


def _render_setup(scene, size, samples):
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, -2.6, 1.9)
    cam.rotation_euler = (np.radians(62), 0.0, 0.0)
    scene.camera = cam
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 4.0
    sun.rotation_euler = (np.radians(40), np.radians(15), np.radians(30))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("World") if scene.world is None else scene.world
    scene.world = world
    bg = world.node_tree.nodes.get("Background") if world.node_tree else None
    if bg is not None:
        bg.inputs["Color"].default_value = (0.05, 0.05, 0.06, 1.0)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"


def test_render_cloth_cycles(baked, tmp_path):
    ob = _open_copy(baked, str(tmp_path))
    scene = bpy.context.scene
    mat = bpy.data.materials.new("Cloth")
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (0.8, 0.15, 0.1, 1.0)
    ob.data.materials.append(mat)
    _render_setup(scene, (160, 120), 4)
    scene.frame_set(FRAMES)
    out = os.path.join(str(tmp_path), "frame10.png")
    scene.render.filepath = out
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(out)
    px = np.array(img.pixels[:], dtype=np.float32).reshape(120, 160, 4)[..., :3]
    assert px.std() > 0.02, "blank render"
    red = (px[..., 0] > px[..., 2] + 0.1).mean()
    assert red > 0.02, f"the red cloth covers only {red:.1%} of the image"


def test_cancel_keeps_previous_cache(baked, tmp_path):
    cache = addon_module("cache")
    ops = addon_module("operators")
    ob = _open_copy(baked, str(tmp_path))
    d = os.path.join(str(tmp_path), "metaphys_cache", "Grid")
    before = cache.cache_files_hash(d)
    ob.metaphys_cloth.tension = 500.0
    job = ops.BakeJob(bpy.context, ob, "cloth", frames=400)
    job.prepare(bpy.context)
    job.start()
    t0 = time.monotonic()
    while job.frames_done < 1 and not job.finished() and time.monotonic() - t0 < 120:
        job.poll()
        time.sleep(0.05)
    assert job.frames_done >= 1 and not job.finished(), job.proc.stderr_tail()
    job.cancel()  # what Esc does
    assert job.outcome.status == "cancelled"
    assert job.proc.returncode in (130, -15, -9)  # -9: killed in its teardown, after its cancel report
    assert cache.cache_files_hash(d) == before
    assert not [p for p in os.listdir(os.path.dirname(d)) if p.startswith(".")]  # staging removed
    assert ob.modifiers["metaphys cloth"].filepath == "//metaphys_cache/Grid/cloth.pc2"


def test_detect_finds_the_repo_venv():
    from conftest import addon_prefs
    p = addon_prefs()
    old = p.python_path, p.metaphys_folder
    p.python_path, p.metaphys_folder = "", ""
    try:
        assert bpy.ops.metaphys.detect_python() == {"FINISHED"}
        assert p.python_path and os.path.exists(p.python_path)
        assert bpy.ops.metaphys.check_python() == {"FINISHED"}
    finally:
        p.python_path, p.metaphys_folder = old
