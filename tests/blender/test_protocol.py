"""Add-on <-> worker plumbing against the protocol stub (tests/blender/stub_engine): spec extraction,
error reports, failed and cancelled bakes keep the previous cache, animated transforms and pins.
Runs without the real engine."""
import json
import os
import sys
import time

import numpy as np
import pytest

from conftest import add_grid, addon_module, bpy, evaluated_world, new_scene


def _cache(blend_dir, name="Grid"):
    return os.path.join(blend_dir, "metaphys_cache", name)


def _stub_frame(spec, k):
    """World positions (grid order) the stub writes for sample k."""
    rest = np.array(spec["rest_positions"])
    w = np.array(spec["pin_weights"])[:, None]
    t = (k + 1) / spec["fps"]
    targets = np.array(spec.get("pin_targets", [spec["rest_positions"]]))
    tgt = targets[min(k + 1, len(targets) - 1)]
    return (1 - w) * (rest + 0.5 * np.array(spec["gravity"]) * t * t) + w * tgt


def test_spec_from_scene(blend_dir, stub_engine):
    scene = new_scene(blend_dir)
    scene.gravity = (0.0, 0.0, -5.0)
    scene.render.fps = 30
    ob = add_grid(8, 8)
    s = ob.metaphys_cloth
    s.tension, s.shear, s.bending, s.air_damping, s.wind = 500.0, 20.0, 1e-4, 0.3, (1.0, 0.0, 0.0)
    s.solver, s.tolerance, s.max_iterations, s.strain_limit = "AUTO", 1e-5, 77, 0.25
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.25, location=(0.1, 0.0, 0.2))
    sph = bpy.context.object
    sph.metaphys_collider.enabled = True
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.5, -1.0), scale=(1.0, 0.5, 0.25))
    box = bpy.context.object
    box.metaphys_collider.enabled = True
    box.location.x = 0.0
    box.keyframe_insert("location", frame=1)
    box.location.x = 1.0
    box.keyframe_insert("location", frame=10)
    spec, info = addon_module("extract_cloth").cloth_spec(bpy.context, ob)
    assert spec["gravity"] == [0.0, 0.0, -5.0] and spec["fps"] == 30.0
    assert spec["frames"] == 10 and spec["start_frame"] == 1
    assert (spec["rows"], spec["cols"]) == (8, 8) and len(spec["rest_positions"]) == 64
    assert spec["tol"] == pytest.approx(1e-5) and spec["max_iterations"] == 77 and spec["solver"] == "auto"
    assert spec["strain_limit"] == pytest.approx(0.25) and spec["iterations_per_step"] == 30
    assert spec["wind"] == [1.0, 0.0, 0.0] and spec["tension"] == 500.0 and spec["bending"] == pytest.approx(1e-4)
    assert spec["shear"] == 20.0 and spec["air_damping"] == pytest.approx(0.3)
    assert not {"stretch", "bend", "damping"} & set(spec)  # the pre-#12 keys, refused by the engine
    s.solver, s.use_tolerance = "METAMIZER", False  # a fixed Metamizer budget: tol null
    spec2, _ = addon_module("extract_cloth").cloth_spec(bpy.context, ob)
    assert spec2["tol"] is None and spec2["solver"] == "metamizer"
    assert sum(spec["pin_weights"]) == 2.0 and "pin_targets" not in spec
    M = np.array(spec["output_matrix"])
    assert np.allclose(M[:3, 3], [0, 0, -1])  # inverse of the object's world matrix
    cube, sphere = spec["colliders"]  # sorted by object name: Cube, Sphere
    assert sphere == {"type": "sphere", "center": pytest.approx([0.1, 0.0, 0.2], abs=1e-6),
                      "radius": pytest.approx(0.25, rel=1e-3), "friction": 0.0}
    assert "rotation" not in cube   # an unrotated box stays axis-aligned (the kernel's path)
    assert cube["type"] == "box" and np.allclose(cube["half_extents"], [0.5, 0.25, 0.125])
    c = np.array(cube["center"])
    assert c.shape == (11, 3) and np.allclose(c[:2], [0, 0.5, -1]) and np.allclose(c[-1], [1, 0.5, -1])
    # world-space rest positions, 1 m grid at z = 1
    rest = np.array(spec["rest_positions"])
    assert np.allclose(rest[:, 2], 1.0) and np.allclose(rest[:, :2].max(0) - rest[:, :2].min(0), 1.0)


def test_animated_object_and_pins(blend_dir, stub_engine):
    """Pins follow an animated object; the cache is object-local frame by frame."""
    new_scene(blend_dir)
    ob = add_grid(6, 6)
    ob.location = (0, 0, 1)
    ob.keyframe_insert("location", frame=1)
    ob.location = (2, 0, 1)
    ob.rotation_euler = (0, 0, 0.5)
    ob.keyframe_insert("location", frame=10)
    ob.keyframe_insert("rotation_euler", frame=10)
    bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    spec = json.load(open(os.path.join(_cache(blend_dir), "bake_spec.json")))
    pt = np.array(spec["pin_targets"])
    assert pt.shape == (11, 36, 3)  # the initial state + one entry per baked frame
    assert np.allclose(pt[0], spec["rest_positions"]) and not np.allclose(pt[-1], pt[0])
    mats = np.array(spec["output_matrix"])  # world -> local per output frame: the engine writes a local cache
    assert mats.shape == (10, 4, 4) and not np.allclose(mats[-1], mats[0])
    vidx = np.array(spec["vertex_index"])
    pinned = np.array(spec["pin_weights"]) > 0
    md = ob.modifiers["metaphys cloth"]
    for frame in (1, 6, 10):
        got = evaluated_world(ob, frame)[vidx]
        assert np.abs(got - _stub_frame(spec, frame - 1)).max() < 1e-5
        md.show_viewport = False
        animated = evaluated_world(ob, frame)[vidx]  # the mesh as animated, without the cloth
        md.show_viewport = True
        assert np.abs(got[pinned] - animated[pinned]).max() < 1e-5  # pins sit on the animation each frame


def test_worker_error_event_becomes_report(blend_dir, stub_engine):
    new_scene(blend_dir)
    ob = add_grid(4, 4)
    os.environ["METAPHYS_STUB_FAIL_AT"] = "3"
    try:
        with pytest.raises(RuntimeError) as ei:
            bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    finally:
        del os.environ["METAPHYS_STUB_FAIL_AT"]
    msg = str(ei.value)
    assert "failed: stub failure at frame 3" in msg and "Traceback" not in msg
    assert not os.path.exists(_cache(blend_dir))
    assert not ob.modifiers
    assert not [p for p in os.listdir(os.path.join(blend_dir, "metaphys_cache")) if p.startswith(".")]


def test_bad_interpreter_message(blend_dir, stub_engine):
    from conftest import addon_prefs
    new_scene(blend_dir)
    ob = add_grid(4, 4)
    p = addon_prefs()
    old = p.python_path, p.metaphys_folder
    p.python_path, p.metaphys_folder = "/usr/bin/env", ""
    try:
        with pytest.raises(RuntimeError, match="not a working Python 3 interpreter"):
            bpy.ops.metaphys.bake_cloth(object_name=ob.name)
        # the base interpreter under the venv: metaphys is installed (editable) only in the venv
        base = os.path.join(sys.base_prefix, "bin", "python3")
        ok, msg, _ = addon_module("worker").probe_interpreter(base, "/nonexistent")
        assert not ok and "cannot import metaphys" in msg and "pip install -e" in msg
    finally:
        p.python_path, p.metaphys_folder = old
    assert not os.path.exists(os.path.join(blend_dir, "metaphys_cache"))


def test_failed_and_cancelled_bakes_keep_previous_cache(blend_dir, stub_engine):
    cache = addon_module("cache")
    ops = addon_module("operators")
    new_scene(blend_dir)
    ob = add_grid(6, 6)
    bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    d = _cache(blend_dir)
    before = cache.cache_files_hash(d)
    assert "cloth.pc2" in before
    # a failing bake
    os.environ["METAPHYS_STUB_FAIL_AT"] = "2"
    ob.metaphys_cloth.tension = 300.0
    try:
        with pytest.raises(RuntimeError, match="stub failure"):
            bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    finally:
        del os.environ["METAPHYS_STUB_FAIL_AT"]
    assert cache.cache_files_hash(d) == before
    # a cancelled one (what Esc does in the modal operator)
    os.environ["METAPHYS_STUB_DELAY"] = "0.3"
    try:
        job = ops.BakeJob(bpy.context, ob, "cloth", frames=50)
        job.prepare(bpy.context)
        job.start()
        t0 = time.monotonic()
        while job.frames_done < 2 and time.monotonic() - t0 < 30:
            job.poll()
            time.sleep(0.02)
        assert job.frames_done >= 2 and not job.finished()
        job.cancel()
    finally:
        del os.environ["METAPHYS_STUB_DELAY"]
    assert job.outcome.status == "cancelled"
    assert cache.cache_files_hash(d) == before
    assert not [p for p in os.listdir(os.path.dirname(d)) if p.startswith(".")]
    assert ob.modifiers["metaphys cloth"].filepath == "//metaphys_cache/Grid/cloth.pc2"
    bpy.ops.metaphys.free_cloth(object_name=ob.name)
    assert not os.path.exists(d) and not ob.modifiers


def test_frame_range_not_starting_at_1(blend_dir, stub_engine):
    """Scene frame f shows sample f - start for the cloth and file density_<f>.vdb for smoke."""
    scene = new_scene(blend_dir)
    scene.frame_start, scene.frame_end = 5, 9
    ob = add_grid(4, 4)
    bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    spec = json.load(open(os.path.join(_cache(blend_dir), "bake_spec.json")))
    assert spec["start_frame"] == 5 and spec["frames"] == 5
    assert ob.modifiers["metaphys cloth"].frame_start == 5.0
    for frame in (5, 7, 9):
        got = evaluated_world(ob, frame)[np.array(spec["vertex_index"])]
        assert np.abs(got - _stub_frame(spec, frame - 5)).max() < 1e-5
    bpy.ops.mesh.primitive_plane_add(size=2.0, location=(0, 3, 0))
    dom = bpy.context.object
    dom.metaphys_smoke.role = "DOMAIN"
    dom.metaphys_smoke.resolution = 16
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, location=(0, 3, 0))
    bpy.context.object.metaphys_smoke.role = "EMITTER"
    bpy.ops.metaphys.bake_smoke(object_name=dom.name)
    vo = bpy.data.objects[dom.name + " metaphys smoke"]
    for frame in (5, 8):
        scene.frame_set(frame)
        ve = vo.evaluated_get(bpy.context.evaluated_depsgraph_get())
        assert os.path.basename(ve.data.grids.frame_filepath) == f"density_{frame:04d}.vdb"
        assert ve.data.grids.is_loaded


def test_flat_colliders(blend_dir, stub_engine):
    new_scene(blend_dir)
    ob = add_grid(4, 4)
    bpy.ops.mesh.primitive_plane_add(size=4.0, location=(0.0, 0.0, 0.5))
    bpy.context.object.name = "Floor"
    bpy.context.object.metaphys_collider.enabled = True
    bpy.ops.mesh.primitive_plane_add(size=1.0, location=(1.0, 0.0, 1.0), rotation=(0.0, np.pi / 2, 0.0))
    bpy.context.object.name = "Wall"
    bpy.context.object.metaphys_collider.enabled = True
    spec, info = addon_module("extract_cloth").cloth_spec(bpy.context, ob)
    floor, wall = spec["colliders"]
    assert floor["type"] == "box" and np.allclose(floor["half_extents"], [2, 2, 1])
    assert np.allclose(floor["center"], [0, 0, -0.5])  # top face stays at z = 0.5
    assert "rotation" not in floor
    # a plane is solid behind its own face, whatever its orientation: the wall's normal is +x
    assert np.allclose(wall["half_extents"], [0.5, 0.5, 0.25]) and np.allclose(wall["center"], [0.75, 0, 1])
    assert np.allclose(wall["rotation"], [0, 90, 0], atol=1e-4)
    assert len(info["warnings"]) == 2


def test_rotated_box_collider_with_friction(blend_dir, stub_engine):
    from metaphys.spec.schema import validate
    new_scene(blend_dir)
    ob = add_grid(4, 4)
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.2, 0.0, 0.3), rotation=(np.radians(30), 0.0, 0.0),
                                    scale=(2.0, 1.0, 0.5))
    box = bpy.context.object
    box.metaphys_collider.enabled, box.metaphys_collider.shape, box.metaphys_collider.friction = True, "BOX", 0.6
    spec, _ = addon_module("extract_cloth").cloth_spec(bpy.context, ob)
    (c,) = spec["colliders"]
    assert c["type"] == "box" and c["friction"] == pytest.approx(0.6)
    assert np.allclose(c["half_extents"], [1.0, 0.5, 0.25]) and np.allclose(c["center"], [0.2, 0, 0.3])
    assert np.allclose(c["rotation"], [30, 0, 0], atol=1e-4)
    validate("cloth", {"colliders": spec["colliders"]})   # the engine takes the colliders as sent


def test_mesh_collider_sends_its_surface(blend_dir, stub_engine, tmp_path):
    from metaphys.spec.schema import validate
    new_scene(blend_dir)
    ob = add_grid(4, 4)
    bpy.ops.mesh.primitive_monkey_add(size=0.5, location=(0.0, 0.0, 0.2))
    suz = bpy.context.object
    suz.metaphys_collider.enabled, suz.metaphys_collider.shape, suz.metaphys_collider.friction = True, "MESH", 0.2
    spec, info = addon_module("extract_cloth").cloth_spec(bpy.context, ob, input_dir=str(tmp_path))
    (c,) = spec["colliders"]
    assert c["type"] == "mesh" and c["friction"] == pytest.approx(0.2)
    V, F = np.load(c["vertices"]), np.load(c["faces"])
    assert V.shape == (507, 3) and F.shape == (968, 3) and F.max() == 506     # Suzanne, triangulated
    assert np.allclose(V.mean(0), [0, 0, 0.2], atol=0.1)                       # world space
    validate("cloth", {"colliders": spec["colliders"]})   # the engine takes the colliders as sent
    inline, _ = addon_module("extract_cloth").cloth_spec(bpy.context, ob)      # no folder: inline lists
    assert np.allclose(np.asarray(inline["colliders"][0]["vertices"]), V)


def test_blender_collision_modifier_makes_a_collider(blend_dir, stub_engine):
    """An object with only Blender's own Collision modifier collides, with the modifier's friction
    (Blender's cloth scales Friction 0..80 by 0.01) and Thickness Outer; the metaphys panel's
    settings win where it is enabled, the modifier's thickness still applies."""
    from metaphys.spec.schema import validate
    ext = addon_module("extract_cloth")
    new_scene(blend_dir)
    ob = add_grid(4, 4)
    bpy.ops.mesh.primitive_monkey_add(size=0.5, location=(0.0, 0.0, 0.2))
    suz = bpy.context.object
    suz.modifiers.new("Collision", "COLLISION")
    suz.collision.cloth_friction, suz.collision.thickness_outer = 20.0, 0.03
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.3, location=(1.0, 0.0, 0.0))
    ball = bpy.context.object
    ball.modifiers.new("Collision", "COLLISION")
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(3.0, 0.0, 0.0))   # no collision at all
    assert [c.name for c in ext.colliders_in(bpy.context, exclude=ob)] == ["Sphere", "Suzanne"]
    spec, info = ext.cloth_spec(bpy.context, ob)
    sphere, monkey = spec["colliders"]
    assert monkey["type"] == "mesh" and monkey["friction"] == pytest.approx(0.2)
    assert monkey["thickness"] == pytest.approx(0.03)
    assert sphere["type"] == "sphere" and sphere["friction"] == pytest.approx(0.01 * ball.collision.cloth_friction)
    assert any("Collision modifier" in w for w in info["warnings"])
    validate("cloth", {"colliders": spec["colliders"]})
    suz.metaphys_collider.enabled, suz.metaphys_collider.shape, suz.metaphys_collider.friction = True, "BOX", 0.7
    _, monkey = ext.cloth_spec(bpy.context, ob)[0]["colliders"]
    assert monkey["type"] == "box" and monkey["friction"] == pytest.approx(0.7)
    assert monkey["thickness"] == pytest.approx(0.03)
