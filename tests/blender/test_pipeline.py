"""Pipeline formats and bake feedback in real Blender: cloth.usdc imported with wm.usd_import equals the Mesh
Cache result; "Export Alembic" writes the baked cloth; the last bake's per-frame residual/strain reach the
panel; the add-on's cloth settings follow the engine's schema; Esc stops a running worker within a
fraction of a frame (measured) and the worker keeps its finished frames."""
import json
import os
import shutil
import time

import numpy as np
import pytest

from conftest import add_grid, addon_module, bpy, evaluated_world, needs_cloth_engine, new_scene
from test_modal import _context, _event, _fake_operator

FRAMES = 3


def _local(ob, frame):
    """Object-space positions [V, 3] of the evaluated mesh at ``frame`` (float32 as Blender stores them)."""
    bpy.context.scene.frame_set(frame)
    me = ob.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    co = np.empty(len(me.vertices) * 3, dtype=np.float32)
    me.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


@pytest.fixture(scope="module")
def baked(tmp_path_factory, engine_weights):
    d = str(tmp_path_factory.mktemp("pipeline"))
    scene = new_scene(d)
    scene.frame_end = FRAMES
    ob = add_grid(16, 16, size=1.0, location=(0.2, 0.0, 1.0))
    ob.rotation_euler = (0.0, 0.0, 0.4)  # object-local cache: output_matrix is not the identity
    s = ob.metaphys_cloth
    s.solver, s.use_tolerance, s.iterations = "METAMIZER", False, 2  # plumbing, not convergence
    bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    bpy.ops.wm.save_mainfile()
    return d


def _open_copy(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    bpy.ops.wm.open_mainfile(filepath=os.path.join(dst, "scene.blend"))
    return bpy.data.objects["Grid"]


@needs_cloth_engine
def test_usd_import_equals_the_mesh_cache(baked, tmp_path):
    from metaphys.io import pc2
    ob = _open_copy(baked, str(tmp_path))
    d = os.path.join(str(tmp_path), "metaphys_cache", "Grid")
    usdc = os.path.join(d, "cloth.usdc")
    assert os.path.isfile(usdc), "the bake wrote no cloth.usdc (usd-core missing from the worker's environment?)"
    frames, _, _ = pc2.read_pc2(os.path.join(d, "cloth.pc2"))
    before = set(bpy.data.objects.keys())
    assert bpy.ops.wm.usd_import(filepath=usdc) == {"FINISHED"}
    new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - before]
    meshes = [o for o in new if o.type == "MESH"]
    assert len(meshes) == 1, [o.name for o in new]
    imp = meshes[0]
    assert len(imp.data.vertices) == 256 and len(imp.data.polygons) == 225 and imp.data.uv_layers
    assert np.allclose(np.array(imp.matrix_world), np.eye(4))  # metres, Z up: no conversion on import
    for frame in (1, 2, FRAMES):
        got = _local(imp, frame)
        assert np.array_equal(got, frames[frame - 1]), f"frame {frame}: USD import differs from the PC2"
        assert np.abs(got - _local(ob, frame)).max() < 1e-6  # and from the Mesh Cache modifier's result
    assert bpy.context.scene.render.fps == 24


@needs_cloth_engine
def test_export_alembic_of_the_baked_cloth(baked, tmp_path):
    ob = _open_copy(baked, str(tmp_path))
    d = os.path.join(str(tmp_path), "metaphys_cache", "Grid")
    assert bpy.ops.metaphys.export_alembic(object_name=ob.name) == {"FINISHED"}
    abc = os.path.join(d, "cloth.abc")
    assert os.path.getsize(abc) > 0
    assert not [f for f in os.listdir(d) if "metaphys-tmp" in f]
    ref = {f: evaluated_world(ob, f) for f in (1, FRAMES)}
    before = set(bpy.data.objects.keys())
    assert bpy.ops.wm.alembic_import(filepath=abc) == {"FINISHED"}
    imp = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - before if bpy.data.objects[n].type == "MESH"]
    assert len(imp) == 1
    for f, want in ref.items():
        got = evaluated_world(imp[0], f)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5, f
    assert np.abs(ref[FRAMES] - ref[1]).max() > 1e-4  # the export is animated, not the rest pose
    # nothing baked: a clear error, no file
    bpy.ops.mesh.primitive_plane_add()
    with pytest.raises(RuntimeError, match="no metaphys cloth bake to export"):
        bpy.ops.metaphys.export_alembic(object_name=bpy.context.object.name)


@needs_cloth_engine
def test_last_bake_numbers_reach_the_panel(baked, tmp_path):
    results = addon_module("results")
    ob = _open_copy(baked, str(tmp_path))
    stats = json.loads(ob.metaphys_cloth.bake_stats)
    man = json.load(open(os.path.join(str(tmp_path), "metaphys_cache", "Grid", "manifest.json")))
    assert stats["frames"] == [1, 2, 3] and stats["residual_key"] == "relative_residual"
    assert stats["residual"] == [f["relative_residual"] for f in man["frames"]]
    assert stats["max_strain"] == [f["max_strain"] for f in man["frames"]]
    assert stats["finished_by"] == ["metamizer"] * 3
    lines = results.stats_lines(stats)
    assert lines[0].startswith("rel. residual (log) ") and len(lines) == 3
    assert "max strain" in lines[1] and "Newton finished 0/3 frames" in lines[2]
    assert "worst relative residual" in results.stats_summary(stats)
    assert results.sparkline([1e-8, 1e-4, None, 1.0], log=True) == "▁▅ █"


def test_cloth_settings_follow_the_engine_schema(blend_dir, stub_engine):
    from metaphys.spec.schema import property_limits, validate
    limits = property_limits("cloth")
    props = bpy.types.Object.bl_rna.properties["metaphys_cloth"].fixed_type.properties
    pairs = {"tension": "tension", "shear": "shear", "bending": "bending", "mass_per_area": "mass_per_area",
             "air_damping": "air_damping", "tolerance": "tol", "iterations": "iterations_per_step",
             "max_iterations": "max_iterations", "newton_max_iterations": "newton_max_iterations",
             "strain_limit": "strain_limit", "substeps": "substeps", "frame_time_budget": "frame_time_budget",
             "self_collision_distance": "self_collision_distance", "self_collision": "self_collision"}
    for prop, key in pairs.items():
        assert props[prop].default == pytest.approx(limits[key]["default"], rel=1e-6), prop
    assert props["solver"].default.lower() == limits["solver"]["default"]
    assert {i.identifier.lower() for i in props["solver"].enum_items} == set(limits["solver"]["options"])
    new_scene(blend_dir)
    ob = add_grid(16, 16)
    for solver, use_tol in (("AUTO", True), ("NEWTON", True), ("METAMIZER", False)):
        ob.metaphys_cloth.solver, ob.metaphys_cloth.use_tolerance = solver, use_tol
        spec, _ = addon_module("extract_cloth").cloth_spec(bpy.context, ob)
        validate("cloth", spec)  # the engine's own validation: raises on an unknown or out-of-range key


@needs_cloth_engine
def test_escape_stops_the_worker_within_a_fraction_of_a_frame(blend_dir, engine_weights):
    """Esc in the modal operator -> SIGTERM -> the engine raises KeyboardInterrupt between bytecodes, so it
    stops inside the running solver iteration, not at the end of the frame."""
    ops = addon_module("operators")
    new_scene(blend_dir)
    ob = add_grid(96, 96)  # ~1 s per frame (auto solver: Metamizer, then Newton; 48^2 became 0.3 s with #24)
    op = _fake_operator(ops.METAPHYS_OT_bake_cloth)
    ctx = _context()
    job = ops.BakeJob(ctx, ob, "cloth", frames=200)
    job.prepare(ctx)
    kept = {}
    discard = job.discard

    def snapshot_then_discard():  # what the worker left in staging before the add-on throws it away
        if job.staging is not None:
            out = job.staging.out_dir
            kept["manifest"] = json.load(open(os.path.join(out, "manifest.json")))
            from metaphys.io import pc2
            kept["pc2_frames"] = pc2.read_pc2_header(os.path.join(out, "cloth.pc2")).num_samples
        discard()

    job.discard = snapshot_then_discard
    job.start()
    op._start_modal(ctx, job)
    t0 = time.monotonic()
    first = None
    while time.monotonic() - t0 < 300:
        assert op.modal(ctx, _event("TIMER")) == {"PASS_THROUGH"}
        frame_events = [e for e in job.proc.events if e.get("event") == "frame"]
        if frame_events:
            first = frame_events[0]
            break
        time.sleep(0.05)
    assert first is not None, job.proc.stderr_tail()
    frame_s = float(first["elapsed"])  # the first frame's solve time (the loop starts at elapsed 0)
    time.sleep(0.4 * frame_s)  # somewhere inside frame 2
    assert job.frames_done == 1 and job.proc.running, "frame 2 finished before Esc: the test grid is too small"
    t_esc = time.monotonic()
    assert op.modal(ctx, _event("ESC", "PRESS")) == {"CANCELLED"}
    latency = time.monotonic() - t_esc  # cancel() returns once the worker has exited
    print(f"abort latency {latency:.3f} s (frame time {frame_s:.2f} s, 96x96 cloth)")
    assert job.proc.returncode in (130, -15, -9) and not job.proc.running  # -9: killed in teardown
    assert latency < 0.5 * frame_s and latency < 1.5, (latency, frame_s)
    # the worker kept its finished frame: manifest says cancelled after 1 frame, the PC2 holds it
    assert kept["manifest"]["status"] == "cancelled" and kept["manifest"]["frames_done"] == 1
    assert kept["pc2_frames"] == 1
    assert op.reports[-1][0] == "WARNING" and not ops.JOBS
