"""metaphys's own .vdb files (metaphys.io.vdbfile) read by real OpenVDB: the ``openvdb`` module bundled
in Blender's bpy wheel (OpenVDB 12) and Blender's Volume objects. Runs with the other Blender tests
(`make test-blender`, after bpy is installed from requirements-blender.txt)."""
from __future__ import annotations

import glob
import importlib.util
import os
import sys

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy not installed: pip install -r requirements-blender.txt")

from metaphys.io import vdb  # noqa: E402


def _bundled_openvdb():
    """Blender's own OpenVDB binding, loaded from inside the bpy package (it is not on sys.path)."""
    if "openvdb" in sys.modules:
        return sys.modules["openvdb"]
    root = os.path.dirname(importlib.util.find_spec("bpy").origin)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    files = glob.glob(os.path.join(root, "*", "python", "lib", pyver, "site-packages", "openvdb.*"))
    assert files, f"bpy at {root} bundles no openvdb module"
    spec = importlib.util.spec_from_file_location("openvdb", files[0])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["openvdb"] = mod
    spec.loader.exec_module(mod)
    return mod


def _sample(tmp_path):
    rng = np.random.default_rng(3)
    d = rng.random((2, 20, 13)).astype(np.float32)
    d[d < 0.4] = 0.0                                  # inactive voxels, as in a real plume
    v = rng.normal(size=(2, 20, 13, 3)).astype(np.float32)
    p = tmp_path / "density_0001.vdb"
    vdb.write_density_vdb(p, d, voxel_size=0.25, origin=(1.0, 2.0, 3.0), velocity=v, velocity_scale=2.0,
                          metadata={"frame": 1})
    return p, d, v


def test_openvdb_reads_the_grids_values_and_transform(tmp_path):
    ov = _bundled_openvdb()
    p, d, v = _sample(tmp_path)
    grid = ov.read(str(p), "density")
    assert grid.gridClass == ov.GridClass.FOG_VOLUME and grid.activeVoxelCount() == np.count_nonzero(d)
    assert dict(grid.metadata)["frame"] == 1
    dense = np.zeros((13, 2, 20), np.float32)         # VDB [x = column, y = slice, z = row from the bottom]
    grid.copyToArray(dense, ijk=(0, 0, 0))
    assert np.array_equal(dense[:, :, ::-1].transpose(1, 2, 0), d)
    assert np.allclose(grid.transform.voxelSize(), 0.25)
    assert np.allclose(grid.transform.indexToWorld((0, 0, 0)), (1.125, 2.125, 3.125))  # voxel centre
    vel = ov.read(str(p), "velocity")
    assert vel.vectorType == ov.VectorType.CONTRAVARIANT_RELATIVE
    dv = np.zeros((13, 2, 20, 3), np.float32)
    vel.copyToArray(dv, ijk=(0, 0, 0))
    assert np.allclose(dv[:, :, ::-1].transpose(1, 2, 0, 3), vdb.read_vdb_velocity(p))


def test_blender_loads_the_file_as_a_volume(tmp_path):
    p, _, _ = _sample(tmp_path)
    volume = bpy.data.volumes.new("metaphys_vdb_check")
    try:
        volume.filepath = str(p)
        assert volume.grids.load(), volume.grids.error_message
        assert {(g.name, g.data_type) for g in volume.grids} == {("density", "FLOAT"), ("velocity", "VECTOR_FLOAT")}
        density = volume.grids["density"]
        assert density.load(), volume.grids.error_message
        assert np.allclose(np.array(density.matrix_object)[:3, 3], (1.125, 2.125, 3.125))
    finally:
        bpy.data.volumes.remove(volume)
