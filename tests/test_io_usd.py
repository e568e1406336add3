"""USD caches: cloth.usdc read back with pxr equals the PC2 frame by frame (float32), with the rest mesh's
topology and UVs and the stage metadata Blender expects; smoke.usda references the VDB sequence.

usd-core is a pinned requirement (requirements.txt): without it these tests fail with the pip command.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metaphys.io import meshseq, pc2, usd, vdb
from metaphys.io.atomic import TEMP_MARKER
from metaphys.io.manifest import read_manifest

usd.require_pxr()  # ImportError naming `pip install usd-core==...` instead of a skip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bake(*args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "metaphys", "bake", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def fast_spec(tmp_path, **extra):
    """Metamizer alone, 2 iterations a step: these tests are about files, not convergence."""
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"solver": "metamizer", "tol": None, "iterations_per_step": 2, **extra}))
    return str(path)


def read_obj(path):
    verts, uvs, faces = [], [], []
    for line in open(path):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            uvs.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:]])
    return np.array(verts), np.array(uvs, dtype=np.float32), np.array(faces)


def test_cloth_usd_equals_pc2_with_vertex_order_and_output_matrix(tmp_path, weights_path):
    rng = np.random.default_rng(3)
    order = rng.permutation(16 * 16).tolist()
    m = np.eye(4)
    m[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90 degrees about Z, then a shift: world -> object
    m[:3, 3] = [0.5, -2.0, 0.25]
    out = tmp_path / "cloth"
    r = bake("cloth", "--out", str(out), "--size", "16", "--frames", "3", "--progress", "none",
             "--spec", fast_spec(tmp_path, vertex_index=order, output_matrix=m.tolist(), start_frame=5, fps=30.0))
    assert r.returncode == 0, r.stderr
    assert "usd-core is not installed" not in r.stderr
    frames, start, _ = pc2.read_pc2(out / "cloth.pc2")
    c = usd.read_cloth_usd(out / "cloth.usdc")
    assert c["times"] == [5.0, 6.0, 7.0]
    assert c["frames"].dtype == np.float32 and c["frames"].shape == frames.shape == (3, 256, 3)
    for k in range(3):
        assert np.array_equal(c["frames"][k], frames[k]), f"frame {k}: USD points differ from the PC2"
    assert (c["fps"], c["start"], c["end"], c["meters_per_unit"], c["up_axis"]) == (30.0, 5.0, 7.0, 1.0, "Z")
    # the same quads, vertex order and UVs as rest.obj (so the Mesh Cache and the USD agree)
    rest, rest_uvs, rest_faces = read_obj(out / "rest.obj")
    assert np.array_equal(c["counts"], np.full(len(rest_faces), 4))
    assert np.array_equal(c["indices"].reshape(-1, 4), rest_faces)
    assert np.allclose(c["uvs"], rest_uvs, atol=1e-6)
    # the output transform and vertex order were applied: the same bake in grid order and world space,
    # transformed and reordered here, gives the same points (up to float32 rounding)
    ref = tmp_path / "ref"
    r = bake("cloth", "--out", str(ref), "--size", "16", "--frames", "3", "--progress", "none", "--format", "none",
             "--spec", fast_spec(tmp_path, start_frame=5, fps=30.0))
    assert r.returncode == 0, r.stderr
    world = usd.read_cloth_usd(ref / "cloth.usdc")["frames"].astype(np.float64)
    expect = np.empty_like(world)
    expect[:, np.asarray(order)] = world @ m[:3, :3].T + m[:3, 3]
    assert np.abs(c["frames"] - expect).max() < 1e-5
    man = read_manifest(out / "manifest.json")
    assert man["outputs"]["usd"] == "cloth.usdc"


def test_format_usd_writes_no_per_frame_meshes(tmp_path, weights_path):
    out = tmp_path / "c"
    r = bake("cloth", "--out", str(out), "--size", "16", "--frames", "2", "--progress", "none",
             "--format", "usd", "--spec", fast_spec(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (out / "cloth.usdc").is_file() and not (out / "frames").exists()
    assert read_manifest(out / "manifest.json")["settings"]["format"] == "usd"
    assert np.array_equal(usd.read_cloth_usd(out / "cloth.usdc")["frames"], pc2.read_pc2(out / "cloth.pc2")[0])


def test_without_usd_core_a_note_or_a_clear_error(tmp_path, weights_path):
    # a stub `pxr` that fails to import stands in for a missing usd-core
    stub = tmp_path / "nopxr"
    (stub / "pxr").mkdir(parents=True)
    (stub / "pxr" / "__init__.py").write_text("raise ImportError('usd-core removed for this test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(stub), ROOT])}
    r = bake("cloth", "--out", str(tmp_path / "a"), "--size", "16", "--frames", "1", "--progress", "none",
             "--spec", fast_spec(tmp_path), env_extra=env)
    assert r.returncode == 0, r.stderr
    assert "usd-core is not installed, so cloth.usdc is not written" in r.stderr and usd.USD_REQUIREMENT in r.stderr
    assert (tmp_path / "a" / "cloth.pc2").is_file() and not (tmp_path / "a" / "cloth.usdc").exists()
    r = bake("cloth", "--out", str(tmp_path / "b"), "--size", "16", "--frames", "1", "--progress", "none",
             "--format", "usd", env_extra=env)
    assert r.returncode == 2 and "--format usd" in r.stderr and "pip install" in r.stderr
    assert not (tmp_path / "b" / "cloth.pc2").exists()


def test_write_cloth_usd_normals_metadata_and_atomicity(tmp_path):
    H = W = 4
    flat = np.zeros((H * W, 3), np.float32)
    flat[:, 0] = np.tile(np.arange(W), H)
    flat[:, 1] = -np.repeat(np.arange(H), W)  # rows go down in y: the OBJ winding faces +z
    frames = np.stack([flat, flat + [0, 0, 1]])
    faces = meshseq.grid_faces(H, W, quads=True)
    path = tmp_path / "c.usda"
    usd.write_cloth_usd(path, frames, faces, meshseq.grid_uvs(H, W), start_frame=1, fps=24)
    from pxr import Usd, UsdGeom
    stage = Usd.Stage.Open(str(path))
    mesh = UsdGeom.Mesh(stage.GetDefaultPrim())
    n = np.asarray(mesh.GetNormalsAttr().Get(2.0))
    assert np.allclose(n, [0, 0, 1]), "normals of a flat quad grid wound like rest.obj point +z"
    assert np.allclose(np.asarray(mesh.GetExtentAttr().Get(2.0)), [[0, -3, 1], [3, 0, 1]])
    assert stage.GetFramesPerSecond() == 24 and mesh.GetSubdivisionSchemeAttr().Get() == "none"
    before = path.read_bytes()
    bad = frames.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="frame 1 has a non-finite position"):
        usd.write_cloth_usd(path, bad, faces)
    with pytest.raises(ValueError, match="face indices"):
        usd.write_cloth_usd(path, frames, faces + 100)
    assert path.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if TEMP_MARKER in f]


def test_smoke_usda_references_the_vdb_sequence_with_velocity(tmp_path, weights_path):
    out = tmp_path / "smoke"
    r = bake("smoke", "--out", str(out), "--size", "16", "--frames", "2", "--iterations", "2",
             "--progress", "none")
    assert r.returncode == 0, r.stderr
    from pxr import Sdf, Usd, UsdVol
    stage = Usd.Stage.Open(str(out / "smoke.usda"))
    assert (stage.GetStartTimeCode(), stage.GetEndTimeCode(), stage.GetTimeCodesPerSecond()) == (1, 2, 24)
    vol = UsdVol.Volume(stage.GetDefaultPrim())
    assert vol and set(vol.GetFieldPaths()) == {"density", "velocity"}
    for field in ("density", "velocity"):
        asset = UsdVol.OpenVDBAsset(stage.GetPrimAtPath(vol.GetFieldPath(field)))
        assert asset.GetFieldNameAttr().Get() == field
        fp = asset.GetFilePathAttr()
        assert fp.GetTimeSamples() == [1.0, 2.0]
        for t in (1, 2):
            p = fp.Get(t)
            assert p.path == f"./density/density_{t:04d}.vdb"  # relative: the bake folder can move
            assert os.path.isfile(p.resolvedPath) and field in vdb.grid_names(p.resolvedPath)
    # the velocity grid is the simulation's, in m/s as stored in the npz (vy up -> +z)
    npz = np.load(out / "density" / "density_0002.npz")
    v = vdb.read_vdb_velocity(out / "density" / "density_0002.vdb")[0]
    assert np.abs(npz["velocity"]).max() > 0
    assert np.allclose(v[..., 0], npz["velocity"][..., 0], atol=1e-6)
    assert np.allclose(v[..., 2], npz["velocity"][..., 1], atol=1e-6)
    man = read_manifest(out / "manifest.json")
    assert man["outputs"]["usd"] == "smoke.usda"
    # the grids' transform, recorded for readers that cannot read it from a grid (the Blender add-on)
    _, info = vdb.read_vdb_grid(out / "density" / "density_0002.vdb")
    assert np.allclose(man["extra"]["vdb_index_to_world"], vdb.index_to_world(info["voxel_size"], info["origin"]))
    assert np.allclose(np.diag(man["extra"]["vdb_index_to_world"])[:3], 1.0 / 16)
