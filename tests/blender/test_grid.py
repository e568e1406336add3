"""Grid detection from topology, and non-grid meshes rejected with a clear report (no worker needed)."""
import os

import numpy as np
import pytest

from conftest import add_grid, addon_module, bpy, new_scene


def _detect(ob):
    ec = addon_module("extract_cloth")
    return ec.detect_grid(*ec.mesh_topology(ob.data), name=ob.name)


def _check_grid(ob, rows, cols, vidx):
    co = np.array([v.co[:] for v in ob.data.vertices])[vidx].reshape(rows, cols, 3)
    # neighbours in the grid are neighbours on the mesh: constant spacing along both directions
    dj = np.linalg.norm(np.diff(co, axis=1), axis=-1)
    di = np.linalg.norm(np.diff(co, axis=0), axis=-1)
    assert np.allclose(dj, dj.flat[0], rtol=1e-4) and np.allclose(di, di.flat[0], rtol=1e-4)
    assert sorted(vidx.tolist()) == list(range(rows * cols))


def test_detect_grid_shapes_and_orders():
    new_scene()
    ob = add_grid(16, 16, pins=False)
    rows, cols, vidx = _detect(ob)
    assert (rows, cols) == (16, 16)
    _check_grid(ob, rows, cols, vidx)
    ob = add_grid(5, 9, pins=False)
    rows, cols, vidx = _detect(ob)
    assert {rows, cols} == {5, 9}
    _check_grid(ob, rows, cols, vidx)
    # shuffled vertex order: the grid is found from the topology alone
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.select_all(action="SELECT")
    bpy.ops.mesh.sort_elements(type="RANDOMIZE", elements={"VERT", "EDGE", "FACE"}, seed=3)
    bpy.ops.object.mode_set(mode="OBJECT")
    rows2, cols2, vidx2 = _detect(ob)
    assert {rows2, cols2} == {5, 9}
    assert not np.array_equal(vidx2, np.arange(45))
    _check_grid(ob, rows2, cols2, vidx2)


@pytest.mark.parametrize("make,why", [
    (lambda: bpy.ops.mesh.primitive_uv_sphere_add(), "not quads"),
    (lambda: bpy.ops.mesh.primitive_cube_add(), "4 corner"),
    (lambda: bpy.ops.mesh.primitive_torus_add(), "4 corner"),
])
def test_non_grid_meshes_rejected(make, why):
    new_scene()
    make()
    ec = addon_module("extract_cloth")
    with pytest.raises(ec.ExtractError, match=why):
        _detect(bpy.context.object)


def test_grid_with_hole_rejected():
    new_scene()
    ob = add_grid(6, 6, pins=False)
    import bmesh
    bm = bmesh.new()
    bm.from_mesh(ob.data)
    bm.verts.ensure_lookup_table()
    bmesh.ops.delete(bm, geom=[bm.verts[14]], context="VERTS")
    bm.to_mesh(ob.data)
    bm.free()
    ec = addon_module("extract_cloth")
    with pytest.raises(ec.ExtractError, match="not a regular grid"):
        _detect(ob)


def test_uv_sphere_bake_reports_clear_error_and_writes_nothing(blend_dir):
    new_scene(blend_dir)
    bpy.ops.mesh.primitive_uv_sphere_add()
    ob = bpy.context.object
    before = sorted(os.listdir(blend_dir))
    with pytest.raises(RuntimeError) as ei:
        bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    msg = str(ei.value)
    assert "Mesh 'Sphere' is not a regular grid" in msg and "Add > Mesh > Grid" in msg
    assert "Traceback" not in msg
    assert sorted(os.listdir(blend_dir)) == before  # no metaphys_cache folder
    assert not ob.modifiers


def test_thin_grids():
    new_scene()
    for rows, cols in ((2, 2), (2, 7), (7, 2), (3, 3)):
        ob = add_grid(rows, cols, pins=False)
        r, c, vidx = _detect(ob)
        assert {r, c} == {rows, cols}
        _check_grid(ob, r, c, vidx)
