"""OpenVDB density grids. Runs wherever an openvdb module exists (bpy's bundled one counts)."""
import os
import sys

import numpy as np
import pytest

from metaphys.io import vdb as vdbmod
from metaphys.io.vdb import read_vdb_grid, vdb_available, write_density_vdb

needs_vdb = pytest.mark.skipif(not vdb_available(), reason="no openvdb module (pip install bpy==5.0.1 provides one)")


@needs_vdb
def test_found_without_importing_bpy():
    had_bpy = "bpy" in sys.modules
    assert vdbmod.openvdb_location()
    assert had_bpy or "bpy" not in sys.modules


@needs_vdb
def test_vdb_roundtrip_3d(tmp_path):
    rng = np.random.default_rng(4)
    d = rng.random((3, 9, 11)).astype(np.float32)
    d[:, 0, :] = 0.0  # zero border rows are inactive in the file but restored on read
    d[1, 4, 5] = 0.0
    p = tmp_path / "smoke.vdb"
    write_density_vdb(p, d, voxel_size=0.05, origin=(1.0, -2.0, 0.5))
    back, info = read_vdb_grid(p, "density")
    assert back.dtype == np.float32 and back.shape == d.shape
    assert np.array_equal(back, d)
    assert np.allclose(info["voxel_size"], 0.05) and np.allclose(info["origin"], (1.0, -2.0, 0.5))
    assert info["grid_class"] == "fog volume"
    # index convention: column -> x, slice -> y, row 0 -> highest z
    assert info["index_max"] == (10, 2, 8)
    assert os.listdir(tmp_path) == ["smoke.vdb"]


@needs_vdb
def test_vdb_2d_is_one_voxel_thick(tmp_path):
    d = np.linspace(0, 2, 6 * 8).reshape(6, 8)  # float64 in, float32 stored
    p = tmp_path / "f.vdb"
    write_density_vdb(p, d, voxel_size=(0.1, 0.2, 0.3), name="smoke", row0="bottom", metadata={"frame": 7})
    back, info = read_vdb_grid(p, "smoke")
    assert back.shape == (1, 6, 8)
    assert np.array_equal(back[0], d.astype(np.float32))
    assert np.allclose(info["voxel_size"], (0.1, 0.2, 0.3))
    assert info["metadata"]["frame"] == 7
    with pytest.raises(ValueError, match="grid 'density'"):
        read_vdb_grid(p, "density")


@needs_vdb
def test_vdb_validation_and_clamp(tmp_path):
    p = tmp_path / "f.vdb"
    with pytest.raises(ValueError, match="non-finite"):
        write_density_vdb(p, np.array([[0.0, np.nan]]))
    assert not p.exists()
    write_density_vdb(p, np.array([[-1.0, 2.0]]))
    assert np.array_equal(read_vdb_grid(p)[0], np.float32([[[0.0, 2.0]]]))


def test_missing_openvdb_error(monkeypatch, tmp_path):
    monkeypatch.setattr(vdbmod, "load_openvdb", lambda refresh=False: None)
    with pytest.raises(RuntimeError, match="pip install bpy"):
        write_density_vdb(tmp_path / "x.vdb", np.ones((2, 2)))
    assert not (tmp_path / "x.vdb").exists()
