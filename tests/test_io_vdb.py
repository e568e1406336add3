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


@needs_vdb
def test_velocity_grid_beside_density(tmp_path):
    rng = np.random.default_rng(7)
    d = rng.random((6, 8))
    v = rng.normal(size=(6, 8, 2))
    p = tmp_path / "f.vdb"
    write_density_vdb(p, d, voxel_size=0.5, velocity=v, velocity_scale=3.0)
    assert vdbmod.grid_names(p) == ["density", "velocity"] and vdbmod.has_velocity(p)
    back = vdbmod.read_vdb_velocity(p)[0]
    # world axes: +column -> x, up -> z, nothing along the slice axis y
    assert np.allclose(back[..., 0], 3 * v[..., 0], atol=1e-5) and np.allclose(back[..., 2], 3 * v[..., 1], atol=1e-5)
    assert not back[..., 1].any()
    assert np.allclose(read_vdb_grid(p)[0][0], d, atol=1e-6)
    with pytest.raises(ValueError, match="velocity must be"):
        write_density_vdb(p, d, velocity=v[:, :5])
    write_density_vdb(tmp_path / "g.vdb", d)
    assert not vdbmod.has_velocity(tmp_path / "g.vdb")


_SYSTEM_PYOPENVDB = [f for d in vdbmod.SYSTEM_DIRS for f in vdbmod._ext_files(d, ("pyopenvdb",))]


# python3-openvdb is a system (apt) package, not a pip requirement: where it is absent there is nothing to test
@pytest.mark.skipif(not _SYSTEM_PYOPENVDB, reason="apt-get install python3-openvdb provides the system pyopenvdb")
def test_system_pyopenvdb_without_bpy(tmp_path):
    """The CLI's OpenVDB without Blender: Debian's pyopenvdb, loaded into this (venv) Python."""
    import subprocess
    code = (
        "import numpy as np, sys\n"
        "from metaphys.io import vdb\n"
        "vdb._bpy_candidates = lambda: []  # as on a machine without bpy\n"
        "m = vdb.load_openvdb(refresh=True)\n"
        "assert m is not None and m.__name__ == 'pyopenvdb', vdb._cache\n"
        "d = np.random.default_rng(1).random((9, 7)); v = np.ones((9, 7, 2))\n"
        f"vdb.write_density_vdb({str(tmp_path / 's.vdb')!r}, d, voxel_size=0.1, velocity=v)\n"
        f"back, info = vdb.read_vdb_grid({str(tmp_path / 's.vdb')!r})\n"
        "assert np.allclose(back[0], d, atol=1e-6) and info['grid_class'] == 'fog volume'\n"
        f"assert np.allclose(vdb.read_vdb_velocity({str(tmp_path / 's.vdb')!r})[0][..., 2], 1.0)\n"
        "print('OK', m.__file__)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120,
                       env=dict(os.environ, PYTHONPATH=root))
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-2000:]
