"""3-D smoke output (issue #28 item 3): VDB files with density, temperature and velocity as real 3-D grids
read back by our reader, the 3-D bake spec, and `metaphys bake smoke` with a 3-D spec (files, manifest,
smoke.usda, --resume bit-identical). Blender and OpenVDB read the same files in tests/blender."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metaphys.io import vdb
from metaphys.spec.params import smoke_parameters, smoke_sim_kwargs
from metaphys.spec.schema import SpecError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vdb_round_trip_of_3d_grids(tmp_path):
    rng = np.random.default_rng(5)
    d = rng.random((5, 9, 7)).astype(np.float32)
    d[d < 0.3] = 0
    t = (rng.random((5, 9, 7)) * (d > 0)).astype(np.float32)
    v = rng.normal(size=(5, 9, 7, 3)).astype(np.float32)
    p = tmp_path / "density_0001.vdb"
    vdb.write_density_vdb(p, d, voxel_size=0.1, origin=(-1.0, 2.0, 0.5), velocity=v, velocity_axes="world",
                          grids={"temperature": t}, clamp_negative=False)
    assert vdb.grid_names(p) == ["density", "temperature", "velocity"]
    back, info = vdb.read_vdb_grid(p)
    assert back.shape == (5, 9, 7) and np.array_equal(back, d)
    assert np.allclose(info["origin"], (-1.0, 2.0, 0.5)) and np.allclose(info["voxel_size"], 0.1)
    assert np.array_equal(vdb.read_vdb_grid(p, "temperature")[0], t)
    assert np.array_equal(vdb.read_vdb_velocity(p), v)          # world vectors stay world vectors
    # image axes (the 2-D convention: vx, vy up, vz to +slice) land on world (x, z, y)
    vdb.write_density_vdb(p, d, velocity=v)
    assert np.array_equal(vdb.read_vdb_velocity(p), v[..., [0, 2, 1]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(grids={"temperature": np.zeros((5, 9, 6))}), "must have the density's shape"),
    (dict(grids={"velocity": np.zeros((5, 9, 7))}), "names must be non-empty strings other than"),
    (dict(velocity=np.zeros((5, 9, 7, 2)), velocity_axes="world"), "must have 3 components"),
    (dict(velocity_axes="up"), "velocity_axes must be 'image' or 'world'"),
])
def test_vdb_bad_input(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        vdb.write_density_vdb(tmp_path / "x.vdb", np.zeros((5, 9, 7)), **kwargs)
    assert not (tmp_path / "x.vdb").exists()


def test_3d_spec_validation():
    p = smoke_parameters({"resolution": [16, 24, 32], "size_m": 2.0})
    assert p["cell_size"] == pytest.approx(2.0 / 32) and p["tol"] == 1e-10 and p["origin"] == [0.0, 0.0, 0.0]
    kw = smoke_sim_kwargs(p)
    assert kw["tol"] == 1e-10 and kw["iterations_per_step"] is None and "png_max" not in kw
    assert "emitters" not in kw                                   # null: the sim's default sphere
    with pytest.raises(SpecError) as e:
        smoke_parameters({"resolution": [16, 16, 16], "obstacle_shapes": [], "flipbook_loop": 2,
                          "wind": [0, 1]})
    text = str(e.value)
    for part in ("obstacle_shapes: a 2-D key", "flipbook_loop: a 2-D key", "wind: expected a list of 3 numbers"):
        assert part in text, text
    with pytest.raises(SpecError, match=r"emitters\[0\]\.faces: expected vertex indices < 4"):
        smoke_parameters({"resolution": [16, 16, 16], "emitters": [
            {"type": "mesh", "center": [0, 0, 0], "vertices": [[0, 0, 0]] * 4, "faces": [[0, 1, 5]] * 4}]})
    with pytest.raises(SpecError, match="cell_size: expected size_m / max"):
        smoke_parameters({"resolution": [16, 16, 32], "size_m": 1.0, "cell_size": 0.5})


def _bake(out, spec, *extra):
    cmd = [sys.executable, "-m", "metaphys", "bake", "smoke", "--out", str(out), "--spec", str(spec),
           "--progress", "none", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "manifest.json").read_text())


def test_3d_bake_writes_volumes_and_resumes_bit_identically(tmp_path):
    spec = tmp_path / "smoke3d.json"
    spec.write_text(json.dumps({"resolution": [16, 16, 16], "frames": 3, "origin": [-0.5, -0.5, 0.0],
                                "emitter_heat": 1.0, "tol": None, "iterations_per_step": 6,
                                "obstacles": [{"type": "sphere", "center": [0, 0, 0.7], "radius": 0.12}]}))
    full = _bake(tmp_path / "full", spec)
    assert full["status"] == "complete" and full["frames_done"] == 3
    assert full["extra"]["min_density"] >= 0.0
    assert np.allclose(np.asarray(full["extra"]["vdb_index_to_world"])[3, :3], [-0.5 + 1 / 32, -0.5 + 1 / 32, 1 / 32])
    f3 = tmp_path / "full" / "density" / "density_0003.vdb"
    assert vdb.grid_names(f3) == ["density", "temperature", "velocity"]
    dens, info = vdb.read_vdb_grid(f3)
    npz = np.load(tmp_path / "full" / "density" / "density_0003.npz", allow_pickle=False)
    assert dens.shape == (16, 16, 16) and np.allclose(dens, npz["density"], atol=1e-6) and dens.max() > 0
    assert np.allclose(vdb.read_vdb_velocity(f3), npz["velocity"], atol=1e-6)
    assert np.allclose(info["origin"], (-0.5, -0.5, 0.0))
    if full["outputs"].get("usd"):
        usda = (tmp_path / "full" / "smoke.usda").read_text()
        assert all(f'fieldName = "{g}"' in usda for g in ("density", "temperature", "velocity"))
    # interrupted after 2 frames, then resumed: the same bytes as the straight bake
    _bake(tmp_path / "part", spec, "--frames", "2")
    resumed = _bake(tmp_path / "part", spec, "--resume")
    assert resumed["frames_done"] == 3
    assert (tmp_path / "part" / "density" / "density_0003.vdb").read_bytes() == f3.read_bytes()
    assert [f["files"] for f in resumed["frames"]] == [f["files"] for f in full["frames"]]


def test_2d_bakes_with_heat_write_the_temperature_grid_too(tmp_path):
    from metaphys.bake.smoke import smoke_writer
    from metaphys.sims import SmokeSim
    params = smoke_parameters({"resolution": [16, 16], "emitter_heat": 2.0, "iterations_per_step": 2, "frames": 2})
    sim = SmokeSim.from_params(params, threads=1)
    writer = smoke_writer(str(tmp_path), params)
    writer.start()
    sim.step()
    writer.write(sim, 1, 0)
    p = tmp_path / "density" / "density_0001.vdb"
    assert vdb.grid_names(p) == ["density", "temperature", "velocity"]
    assert np.allclose(vdb.read_vdb_grid(p, "temperature")[0][0], sim.temperature, atol=1e-6)
    assert sim.temperature.max() > 0


def test_3d_bakes_run_and_record_the_sims_network_precision(tmp_path):
    """`metaphys bake smoke` with a 3-D spec runs the network in the precision the Python API's default sim
    runs (bfloat16 where the CPU has it, METAPHYS_NETWORK_DTYPE overrides), records it in the manifest's
    settings, and refuses to resume in another precision, saying how to match it."""
    spec = tmp_path / "smoke3d.json"
    spec.write_text(json.dumps({"resolution": [16, 16, 16], "frames": 2, "tol": None, "iterations_per_step": 4}))
    env = dict(os.environ, METAPHYS_NETWORK_DTYPE="bfloat16")

    def bake(out, *extra, env=env):
        cmd = [sys.executable, "-m", "metaphys", "bake", "smoke", "--out", str(out), "--spec", str(spec),
               "--progress", "none", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)

    r = bake(tmp_path / "b", "--frames", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["settings"]["network_dtype"] == "bfloat16"
    r = bake(tmp_path / "b", "--resume", env=dict(env, METAPHYS_NETWORK_DTYPE="float32"))
    assert r.returncode != 0
    assert "network_dtype: the bake was written with 'bfloat16', resume asked for 'float32'" in r.stderr
    assert "METAPHYS_NETWORK_DTYPE=bfloat16" in r.stderr
    r = bake(tmp_path / "b", "--resume")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["frames_done"] == 2
