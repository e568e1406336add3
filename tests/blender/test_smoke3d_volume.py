"""3-D smoke in Blender (issue #28 item 3): a baked VDB sequence of SmokeSim3D opens as a Volume object
(an image sequence of 3-D grids) whose bounding box is where the bake's domain and grids are."""
from __future__ import annotations

import os

import numpy as np

from conftest import bpy, new_scene

from metaphys.io import vdb, vdbfile


def _import_sequence(folder: str, names):
    bpy.ops.object.volume_import(filepath=os.path.join(folder, names[0]), directory=folder,
                                 files=[{"name": n} for n in names])
    return bpy.context.object


def _world_box(ob, frame: int):
    bpy.context.scene.frame_set(frame)
    oe = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    assert oe.data.grids.is_loaded, oe.data.grids.error_message
    m = np.array(oe.matrix_world, dtype=np.float64)
    corners = np.array([list(v) + [1.0] for v in oe.bound_box]) @ m.T
    return oe, corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)


def _leaf_box(path: str, cell: float, origin):
    """World box of the 8^3 leaves of every grid in the file (what Blender bounds a volume by)."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for name in vdb.grid_names(path):
        for leaf_origin, _, _ in vdbfile.read_grid(path, name).leaves:
            lo, hi = np.minimum(lo, leaf_origin), np.maximum(hi, leaf_origin + 8)
    return np.asarray(origin) + cell * lo, np.asarray(origin) + cell * hi


def test_domain_sized_grids_give_the_domain_box(tmp_path):
    """Density in the domain's two far corners: the volume's box is the domain, at its origin and size."""
    new_scene()
    d = np.zeros((16, 24, 16), np.float32)      # depth (y) 16, rows (z) 24, cols (x) 16
    d[0, 0, 0] = d[-1, -1, -1] = 1.0
    names = []
    for f in (1, 2):
        names.append(f"density_{f:04d}.vdb")
        vdb.write_density_vdb(tmp_path / names[-1], d * f, voxel_size=0.05, origin=(-0.4, 1.0, 0.25))
    ob = _import_sequence(str(tmp_path), names)
    assert ob.type == "VOLUME" and ob.data.is_sequence and ob.data.frame_duration == 2
    oe, lo, hi = _world_box(ob, 2)
    assert os.path.basename(oe.data.grids.frame_filepath) == "density_0002.vdb"
    assert np.allclose(lo, (-0.4, 1.0, 0.25), atol=1e-6) and np.allclose(hi, (0.4, 1.8, 1.45), atol=1e-6)
    # voxel (col, depth, rows - 1 - row) is the cube of node (depth, row, col): row 0 at the top
    m = np.array(oe.data.grids["density"].matrix_object, dtype=np.float64)
    assert np.allclose((m @ [0, 0, 23, 1])[:3], (-0.4 + 0.025, 1.0 + 0.025, 0.25 + 23.5 * 0.05))


def test_baked_3d_smoke_opens_as_a_volume_sequence(tmp_path):
    from metaphys.bake.smoke import SmokeWriter3D
    from metaphys.sims.smoke3d import SmokeSim3D
    from metaphys.spec.params import smoke_parameters
    params = smoke_parameters({"resolution": [16, 16, 24], "size_m": 1.5, "origin": [-0.75, -0.5, 0.0],
                               "emitter_heat": 1.0, "frames": 3, "tol": None, "iterations_per_step": 3})
    sim = SmokeSim3D.from_params(params, threads=1)
    writer = SmokeWriter3D(str(tmp_path), params)
    writer.start()
    for k in range(3):
        sim.step()
        writer.write(sim, k + 1, k)
    writer.finish(sim)
    folder = os.path.join(str(tmp_path), "density")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".vdb"))
    assert names == ["density_0001.vdb", "density_0002.vdb", "density_0003.vdb"]
    new_scene()
    ob = _import_sequence(folder, names)
    assert ob.type == "VOLUME" and ob.data.is_sequence and ob.data.frame_duration == 3
    cell = params["cell_size"]
    for frame in (2, 3):
        oe, lo, hi = _world_box(ob, frame)
        assert {g.name for g in oe.data.grids} == {"density", "temperature", "velocity"}
        want_lo, want_hi = _leaf_box(os.path.join(folder, names[frame - 1]), cell, params["origin"])
        assert np.allclose(lo, want_lo, atol=1e-6) and np.allclose(hi, want_hi, atol=1e-6), (frame, lo, hi)
        # leaves start inside the domain (they may reach past its far side: 8^3 blocks)
        assert np.all(lo >= np.array(params["origin"]) - 1e-9)
    # the densest node's voxel sits at that node's world position
    grid = oe.data.grids["density"]
    assert grid.load()
    m = np.array(grid.matrix_object, dtype=np.float64)
    k, i, j = np.unravel_index(np.argmax(sim.density), sim.density.shape)
    want = np.array(params["origin"]) + cell * np.array([j + 0.5, k + 0.5, 16 - 1 - i + 0.5])
    assert np.allclose((m @ [j, k, 15 - i, 1.0])[:3], want, atol=1e-6)


def test_openvdb_reads_the_3d_grids(tmp_path):
    """OpenVDB 12 (bundled with bpy) reads density, temperature and the world velocity of a 3-D frame."""
    from test_vdb_openvdb import _bundled_openvdb
    ov = _bundled_openvdb()
    rng = np.random.default_rng(7)
    d = rng.random((9, 12, 10)).astype(np.float32)
    d[d < 0.5] = 0
    t = (0.5 * d).astype(np.float32)
    v = rng.normal(size=(9, 12, 10, 3)).astype(np.float32)
    p = tmp_path / "density_0001.vdb"
    vdb.write_density_vdb(p, d, voxel_size=0.1, origin=(1.0, 0.0, -2.0), velocity=v, velocity_axes="world",
                          grids={"temperature": t})
    for name, want in (("density", d), ("temperature", t)):
        g = ov.read(str(p), name)
        dense = np.zeros((10, 9, 12), np.float32)             # [x = col, y = depth, z = row from the bottom]
        g.copyToArray(dense, ijk=(0, 0, 0))
        assert np.array_equal(dense[:, :, ::-1].transpose(1, 2, 0), want), name
    g = ov.read(str(p), "velocity")
    dv = np.zeros((10, 9, 12, 3), np.float32)
    g.copyToArray(dv, ijk=(0, 0, 0))
    assert np.array_equal(dv[:, :, ::-1].transpose(1, 2, 0, 3), v)
    assert np.allclose(g.transform.indexToWorld((0, 0, 0)), (1.05, 0.05, -1.95))


def test_addon_bakes_a_3d_domain_box(blend_dir, engine_weights):
    """The add-on bakes a 3D domain from a box and emitter/obstacle objects (meshes, voxelized by the engine)
    and loads the VDB sequence as a Volume whose grids sit in the domain's world box."""
    from conftest import addon_module, engine_available
    import pytest
    if not engine_available():
        pytest.skip("the metaphys bake CLI is not there yet")
    import json
    scene = new_scene(blend_dir)
    scene.frame_end = 3
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.2, -0.1, 0.5))
    dom = bpy.context.object
    dom.name = "Box"
    s = dom.metaphys_smoke
    s.role, s.dimensions, s.resolution, s.iterations = "DOMAIN", "3D", 16, 3
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.15, location=(0.2, -0.1, 0.25))
    bpy.context.object.metaphys_smoke.role = "EMITTER"
    bpy.ops.mesh.primitive_cube_add(size=0.25, location=(0.2, -0.1, 0.7))
    bpy.context.object.metaphys_smoke.role = "OBSTACLE"
    bpy.ops.metaphys.bake_smoke(object_name=dom.name)

    d = os.path.join(blend_dir, "metaphys_cache", "Box")
    spec = json.load(open(os.path.join(d, "bake_spec.json")))
    assert spec["resolution"] == [16, 16, 16] and spec["frames"] == 3
    assert np.allclose(spec["origin"], (-0.3, -0.6, 0.0)) and spec["cell_size"] == 1 / 16
    assert [e["type"] for e in spec["emitters"]] == ["mesh"] and len(spec["obstacles"]) == 1
    vo = bpy.data.objects["Box metaphys smoke"]
    assert vo.type == "VOLUME" and vo.data.is_sequence and vo.data.frame_duration == 3
    oe, lo, hi = _world_box(vo, 3)
    assert {g.name for g in oe.data.grids} >= {"density", "velocity"}
    assert np.all(lo >= np.array([-0.3, -0.6, 0.0]) - 1e-6) and np.all(lo <= np.array([0.2, -0.1, 0.5]))
    density, info = vdb.read_vdb_grid(oe.data.grids.frame_filepath)
    assert np.allclose(info["origin"], (-0.3, -0.6, 0.0)) and density.max() > 0
    # the smoke starts in the emitter sphere (low in the box) and the obstacle cube holds none
    k, i, j = np.unravel_index(np.argmax(density), density.shape)
    z = (16 - 1 - i + 0.5) / 16
    assert z < 0.6, z
    assert density[6:10, 3:6, 6:10].max() == 0              # the cube: x, y in cells 6..9, z 0.575..0.825 m: rows 3..5
    bpy.ops.metaphys.free_smoke(object_name=dom.name)
    assert "Box metaphys smoke" not in bpy.data.objects
