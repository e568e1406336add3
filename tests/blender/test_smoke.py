"""Smoke bake: a Volume object on the domain plane whose VDB frames hold the baked density
(compared with the engine's .npz of the same frame). Runs against the protocol stub always and
against the real engine once it is there."""
import json
import os

import numpy as np
import pytest

from conftest import STUB_ENGINE, addon_module, addon_prefs, bpy, engine_available, new_scene


@pytest.fixture(params=["stub", "engine"])
def engine(request):
    p = addon_prefs()
    old = p.metaphys_folder
    if request.param == "stub":
        p.metaphys_folder = STUB_ENGINE
    elif not engine_available():
        pytest.skip("the metaphys bake CLI is not there yet")
    else:
        request.getfixturevalue("engine_weights")
    yield request.param
    p.metaphys_folder = old


def test_smoke_bake_volume(blend_dir, engine):
    from metaphys.io import read_frame_npz, read_vdb_grid
    scene = new_scene(blend_dir)
    scene.frame_end = 5
    bpy.ops.mesh.primitive_plane_add(size=2.0, location=(0.0, 0.0, 1.0), rotation=(np.pi / 2, 0.0, 0.0))
    dom = bpy.context.object
    dom.name = "Domain"
    dom.metaphys_smoke.role = "DOMAIN"
    dom.metaphys_smoke.resolution = 32
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.3, location=(0.0, 0.0, 0.45))
    bpy.context.object.metaphys_smoke.role = "EMITTER"
    bpy.ops.mesh.primitive_cube_add(size=0.3, location=(0.3, 0.0, 1.3))
    bpy.context.object.metaphys_smoke.role = "OBSTACLE"

    bpy.ops.metaphys.bake_smoke(object_name=dom.name)

    d = os.path.join(blend_dir, "metaphys_cache", "Domain")
    spec = json.load(open(os.path.join(d, "bake_spec.json")))
    assert spec["resolution"] == [32, 32] and spec["frames"] == 5
    em = np.load(os.path.join(d, "emitters.npy"))
    assert em.shape == (32, 32) and 0 < em.sum() < 32 * 32 / 4
    assert em[:16].sum() == 0  # the emitter sphere is in the lower half (row 0 = top)
    ob_mask = np.load(os.path.join(d, "obstacles.npy"))
    assert ob_mask[:16, 16:].sum() > 0 and ob_mask[16:].sum() == 0  # obstacle: upper right
    vo = bpy.data.objects["Domain metaphys smoke"]
    vol = vo.data
    assert vo.type == "VOLUME" and vol.is_sequence and vol.frame_start == 1 and vol.frame_duration == 5
    mat = vol.materials[0]
    pv = next(n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeVolumePrincipled")
    assert pv.inputs["Density Attribute"].default_value == "density"
    assert pv.outputs[0].links[0].to_node.bl_idname == "ShaderNodeOutputMaterial"

    g = addon_module("extract_smoke").domain_geometry(dom, 32)
    centers = addon_module("extract_smoke").cell_centers_world(g, dom.matrix_world)  # [32, 32, 3]
    for frame in (2, 5):
        scene.frame_set(frame)
        dg = bpy.context.evaluated_depsgraph_get()
        ve = vo.evaluated_get(dg)
        grids = ve.data.grids
        assert grids.is_loaded and "density" in grids, grids.error_message
        path = grids.frame_filepath
        assert os.path.basename(path).endswith(f"{frame:04d}.vdb")
        vdb, info = read_vdb_grid(path)
        dens = np.asarray(read_frame_npz(path[:-4] + ".npz")["density"], dtype=np.float32)
        assert dens.shape[-2:] == (32, 32)
        assert np.allclose(vdb[0], np.maximum(dens.reshape(32, 32), 0.0), atol=1e-6)
        assert dens.max() > 0
        # Blender's voxel (j, 0, H-1-i) sits on the domain's cell (i, j)
        M = np.array(ve.matrix_world, dtype=np.float64) @ np.array(grids["density"].matrix_object, dtype=np.float64)
        for i, j in ((0, 0), (31, 0), (5, 20), (31, 31)):
            p = M @ np.array([j, 0, 31 - i, 1.0])
            assert np.allclose(p[:3], centers[i, j], atol=1e-5), (i, j)
    bpy.ops.metaphys.free_smoke(object_name=dom.name)
    assert "Domain metaphys smoke" not in bpy.data.objects and not os.path.exists(d)


def test_smoke_settings_follow_the_engine_schema(blend_dir):
    """The domain's properties default to the schema's physical defaults, and the spec the add-on
    writes is one the engine accepts, in the same units (size_m and cell_size agree)."""
    from metaphys.spec.schema import property_limits, validate
    limits = property_limits("smoke")
    props = bpy.types.Object.bl_rna.properties["metaphys_smoke"].fixed_type.properties
    pairs = {"emitter_density": "emitter_density", "buoyancy": "buoyancy", "viscosity": "viscosity",
             "density_diffusion": "density_diffusion", "substeps": "substeps", "cfl": "cfl",
             "emitter_heat": "emitter_heat", "heat_buoyancy": "heat_buoyancy", "cooling": "cooling",
             "iterations": "iterations_per_step", "max_iterations": "max_iterations"}
    for prop, key in pairs.items():
        assert props[prop].default == pytest.approx(limits[key]["default"], rel=1e-6), prop
    for prop in ("emitter_velocity", "wind"):
        assert list(props[prop].default_array) == limits[prop]["default"], prop
    assert props["substeps"].hard_max == limits["substeps"]["max"]
    # the game flipbook: the same defaults and choices as the spec's flipbook_* keys
    assert props["flipbook"].default == limits["flipbook"]["default"]
    assert [props["flipbook_rows"].default, props["flipbook_cols"].default] == limits["flipbook_layout"]["default"]
    assert props["flipbook_rows"].hard_max == limits["flipbook_layout"]["max"]
    assert props["flipbook_loop"].default == limits["flipbook_loop"]["default"]
    for prop in ("flipbook_alpha", "flipbook_engine"):
        assert [i.identifier.lower() for i in props[prop].enum_items] == limits[prop]["options"], prop
        assert props[prop].default.lower() == limits[prop]["default"], prop
    new_scene(blend_dir)
    bpy.ops.mesh.primitive_plane_add(size=2.0, location=(0.0, 0.0, 1.0), rotation=(np.pi / 2, 0.0, 0.0))
    dom = bpy.context.object
    dom.metaphys_smoke.role = "DOMAIN"
    dom.metaphys_smoke.resolution = 32
    dom.scale = (1.5, 1.0, 1.0)  # 3 m x 2 m: 32 x 21 cells of 3/32 m
    bpy.context.view_layer.update()
    spec, _ = addon_module("extract_smoke").smoke_spec(bpy.context, dom, str(blend_dir))
    p = validate("smoke", spec)  # the engine's own validation: raises on an unknown or out-of-range key
    assert p["resolution"] == [21, 32] and p["size_m"] == pytest.approx(3.0) and p["cell_size"] == pytest.approx(3 / 32)
    assert p["buoyancy"] == limits["buoyancy"]["default"] and p["cfl"] == limits["cfl"]["default"]
    assert p["flipbook"] and p["flipbook_layout"] == [8, 8] and p["flipbook_cell"] is None
    dom.metaphys_smoke.flipbook_rows, dom.metaphys_smoke.flipbook_loop = 4, 6
    dom.metaphys_smoke.flipbook_cell, dom.metaphys_smoke.flipbook_step = 128, 2
    dom.metaphys_smoke.flipbook_alpha, dom.metaphys_smoke.flipbook_engine = "PREMULTIPLIED", "UNREAL"
    spec, _ = addon_module("extract_smoke").smoke_spec(bpy.context, dom, str(blend_dir))
    p = validate("smoke", spec)
    assert (p["flipbook_layout"], p["flipbook_loop"], p["flipbook_cell"], p["flipbook_step"]) == ([4, 8], 6, 128, 2)
    assert (p["flipbook_alpha"], p["flipbook_engine"]) == ("premultiplied", "unreal")
    dom.metaphys_smoke.flipbook = False
    spec, _ = addon_module("extract_smoke").smoke_spec(bpy.context, dom, str(blend_dir))
    assert validate("smoke", spec)["flipbook"] is False
