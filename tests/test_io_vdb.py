"""OpenVDB density grids, written and read by metaphys itself (metaphys.io.vdbfile): these run on
every machine. tests/blender/test_vdb_openvdb.py checks the same files with OpenVDB 12 and Blender."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from metaphys.io import vdb as vdbmod
from metaphys.io import vdbfile
from metaphys.io.vdb import read_vdb_grid, write_density_vdb


def test_available_without_any_openvdb_module(tmp_path):
    """Writing and reading loads no OpenVDB binding and no bpy, and looks at no system site-packages."""
    code = ("import sys, numpy as np\n"
            "from metaphys.io import vdb\n"
            f"vdb.write_density_vdb({str(tmp_path / 'a.vdb')!r}, np.ones((4, 5)), velocity=np.ones((4, 5, 2)))\n"
            f"assert vdb.read_vdb_grid({str(tmp_path / 'a.vdb')!r})[0].shape == (1, 4, 5)\n"
            "print(sorted(m for m in ('bpy', 'openvdb', 'pyopenvdb') if m in sys.modules), vdb.vdb_available())\n"
            "print(any('dist-packages' in p for p in sys.path))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["[] True", "False"]


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


def test_vdb_validation_and_clamp(tmp_path):
    p = tmp_path / "f.vdb"
    with pytest.raises(ValueError, match="non-finite"):
        write_density_vdb(p, np.array([[0.0, np.nan]]))
    assert not p.exists()
    write_density_vdb(p, np.array([[-1.0, 2.0]]))
    assert np.array_equal(read_vdb_grid(p)[0], np.float32([[[0.0, 2.0]]]))


def test_unreadable_files_are_named_in_the_error(tmp_path):
    p = tmp_path / "f.vdb"
    write_density_vdb(p, np.ones((3, 4)))
    data = p.read_bytes()
    (tmp_path / "text.vdb").write_text("not a volume")
    with pytest.raises(ValueError, match=r"text\.vdb.*not an OpenVDB file"):
        read_vdb_grid(tmp_path / "text.vdb")
    (tmp_path / "cut.vdb").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.vdb.*truncated"):
        read_vdb_grid(tmp_path / "cut.vdb")
    with pytest.raises(ValueError, match=r"no grid named 'smoke' \(grids: \['density'\]\)"):
        read_vdb_grid(p, "smoke")
    with pytest.raises(ValueError, match="cannot read"):
        vdbmod.grid_names(tmp_path / "missing.vdb")
    assert not vdbmod.has_velocity(tmp_path / "text.vdb")


def test_rotated_transform_is_kept(tmp_path):
    m = np.eye(4)
    m[0, :3] = (0.0, 0.5, 0.0)   # index x -> world y
    m[1, :3] = (-0.5, 0.0, 0.0)
    m[3, :3] = (1.0, 2.0, 3.0)
    p = tmp_path / "r.vdb"
    write_density_vdb(p, np.ones((2, 3)), transform=m)
    assert np.array_equal(vdbfile.read_grid(p, "density").index_to_world, m)
    assert np.allclose(read_vdb_grid(p)[1]["voxel_size"], (0.5, 0.5, 1.0))


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
