"""The OpenVDB file format itself (metaphys.io.vdbfile): layout, trees beyond one node, refusals."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from metaphys.io import vdb as vdbmod
from metaphys.io import vdbfile
from metaphys.io.vdb import read_vdb_grid, write_density_vdb


def test_what_the_reader_does_not_support_is_refused_by_name(tmp_path):
    p = tmp_path / "f.vdb"
    write_density_vdb(p, np.ones((3, 4)))
    grid_pos = vdbfile.read_grid_infos(p)[0].grid_pos
    data = bytearray(p.read_bytes())
    data[grid_pos:grid_pos + 4] = struct.pack("<I", vdbfile.COMPRESS_BLOSC | vdbfile.COMPRESS_ACTIVE_MASK)
    (tmp_path / "blosc.vdb").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"blosc\.vdb: grid 'density' is Blosc-compressed"):
        read_vdb_grid(tmp_path / "blosc.vdb")


def test_file_layout_is_openvdb_224(tmp_path):
    """The header OpenVDB reads first: magic, format version 224, grid offsets, a UUID."""
    p = tmp_path / "f.vdb"
    write_density_vdb(p, np.ones((2, 2)))
    magic, version, _, _, offsets = struct.unpack("<qIIIB", p.read_bytes()[:21])
    assert (magic, version, offsets) == (0x56444220, 224, 1)
    assert len(p.read_bytes()[21:57].decode("ascii").split("-")) == 5


def test_grids_beyond_one_top_node_and_sparse_leaves(tmp_path):
    """5000 cells along one axis need two 4096^3 top-level nodes; all-zero leaves are not stored."""
    d = np.zeros((1, 3, 5000), np.float32)
    d[0, 1, ::97] = np.arange(1, 53)
    p = tmp_path / "long.vdb"
    write_density_vdb(p, d, row0="bottom")
    grid = vdbfile.read_grid(p, "density")
    assert len(grid.leaves) == 52 and grid.active_bbox() == ((0, 0, 1), (4947, 0, 1))
    assert np.array_equal(read_vdb_grid(p)[0], d)



def test_the_same_grids_give_the_same_bytes_and_other_grids_another_uuid(tmp_path):
    # the file UUID comes from the content: identical bakes write identical .vdb files
    d = np.arange(12, dtype=np.float64).reshape(3, 4)
    write_density_vdb(tmp_path / "a.vdb", d)
    write_density_vdb(tmp_path / "b.vdb", d)
    write_density_vdb(tmp_path / "c.vdb", d + 1)
    a, b, c = ((tmp_path / f"{k}.vdb").read_bytes() for k in "abc")
    assert a == b
    assert a[21:57] != c[21:57]
    back, _ = read_vdb_grid(tmp_path / "a.vdb")       # the offsets behind the UUID still point right
    np.testing.assert_allclose(back.reshape(d.shape), d, rtol=1e-6)
