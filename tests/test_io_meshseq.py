"""Grid meshes: faces/UVs, hand-written rest OBJ with quads and UVs, trimesh formats, sequences."""
import os

import numpy as np
import pytest

from metaphys.io.meshseq import grid_faces, grid_uvs, sequence_path, write_mesh, write_rest_obj, write_sequence

H, W = 5, 7


@pytest.fixture
def grid():
    rng = np.random.default_rng(1)
    u, v = np.meshgrid(np.linspace(0, 1, W), np.linspace(0, 1, H))
    pts = np.stack([u, 0.1 * rng.standard_normal((H, W)), 1 - v], axis=-1)
    return pts.astype(np.float32)  # [H, W, 3]


def test_grid_faces_and_uvs():
    q = grid_faces(H, W, quads=True)
    t = grid_faces(H, W)
    assert q.shape == ((H - 1) * (W - 1), 4) and t.shape == (2 * (H - 1) * (W - 1), 3)
    assert q[0].tolist() == [0, W, W + 1, 1]
    assert t[0].tolist() == [0, W, W + 1] and t[1].tolist() == [0, W + 1, 1]
    uv = grid_uvs(H, W)
    assert uv.shape == (H * W, 2)
    assert uv[0].tolist() == [0.0, 1.0] and uv[-1].tolist() == [1.0, 0.0]
    # faces wind counter-clockwise in UV space (positive signed area)
    a, b, c = (uv[t[:, k]] for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (area > 0).all()
    with pytest.raises(ValueError):
        grid_faces(1, 5)


def test_rest_obj_quads_uvs_and_trimesh(tmp_path, grid):
    import trimesh

    p = tmp_path / "rest.obj"
    write_rest_obj(p, grid.reshape(-1, 3), H, W)
    lines = p.read_text().splitlines()
    v = [ln for ln in lines if ln.startswith("v ")]
    vt = [ln for ln in lines if ln.startswith("vt ")]
    f = [ln for ln in lines if ln.startswith("f ")]
    assert len(v) == H * W and len(vt) == H * W and len(f) == (H - 1) * (W - 1)
    assert all(len(ln.split()) == 5 for ln in f)  # quads
    assert f[0] == f"f 1/1 {W + 1}/{W + 1} {W + 2}/{W + 2} 2/2"
    parsed = np.array([[float(x) for x in ln.split()[1:]] for ln in v], dtype=np.float32)
    assert np.array_equal(parsed, grid.reshape(-1, 3))  # %.9g round-trips float32
    m = trimesh.load(p, process=False, force="mesh")
    assert len(m.vertices) == H * W
    assert np.array_equal(np.asarray(m.vertices, dtype=np.float32), grid.reshape(-1, 3))
    assert len(m.faces) == 2 * (H - 1) * (W - 1)
    with pytest.raises(ValueError, match="H\\*W"):
        write_rest_obj(p, grid.reshape(-1, 3), H + 1, W)


@pytest.mark.parametrize("fmt", ["ply", "glb", "obj"])
def test_write_mesh_formats(tmp_path, grid, fmt):
    import trimesh

    p = tmp_path / f"m.{fmt}"
    write_mesh(p, grid, uvs=True)
    m = trimesh.load(p, process=False, force="mesh")
    assert len(m.vertices) == H * W and len(m.faces) == 2 * (H - 1) * (W - 1)
    expect = grid.reshape(-1, 3)
    if fmt == "glb":  # glTF is +Y up: (x, y, z) -> (x, z, -y)
        expect = np.stack([expect[:, 0], expect[:, 2], -expect[:, 1]], axis=1)
    assert np.allclose(m.vertices, expect, atol=1e-6)
    assert os.listdir(tmp_path) == [f"m.{fmt}"]


def test_write_sequence(tmp_path, grid):
    frames = np.stack([grid + k for k in range(3)])
    paths = write_sequence(tmp_path / "seq", frames, format="obj", start=1)
    assert [os.path.basename(q) for q in paths] == ["frame_0001.obj", "frame_0002.obj", "frame_0003.obj"]
    assert sequence_path(tmp_path / "seq", 12, "ply") == str(tmp_path / "seq" / "frame_0012.ply")
    last = [ln for ln in open(paths[-1]).read().splitlines() if ln.startswith("v ")]
    assert np.allclose([float(x) for x in last[0].split()[1:]], grid[0, 0] + 2)
    bad = frames.copy()
    bad[1, 2, 3, 0] = np.inf
    with pytest.raises(ValueError, match="frame 1"):
        write_sequence(tmp_path / "seq2", bad)
    assert not (tmp_path / "seq2").exists()
