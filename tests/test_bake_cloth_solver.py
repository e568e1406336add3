"""Cloth bakes with the physical-unit ClothSim (issue #12): both solver stages are recorded per frame, --strict turns a missed tolerance or strain limit into
exit 1 without writing the bad frame."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metaphys.io import pc2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bake(tmp_path, spec, *args, name="o"):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / name
    r = subprocess.run([sys.executable, "-m", "metaphys", "bake", "cloth", "--out", str(out), "--spec", str(path),
                        "--size", "16", "--frames", "2", "--progress", "none", *args], capture_output=True,
                       text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    return r, out


@pytest.mark.parametrize("solver", ["auto", "newton"])
def test_solver_stages_are_recorded_per_frame(tmp_path, weights_path, solver):
    r, out = bake(tmp_path, {}, "--iterations", "2", "--solver", solver)
    assert r.returncode == 0, r.stderr
    m = json.load(open(out / "manifest.json"))
    frames = m["frames"]
    assert m["parameters"]["solver"] == solver and len(frames) == 2
    for f in frames:
        assert f["finished_by"] in ("metamizer", "newton") and isinstance(f["converged"], bool)
        assert np.isfinite(f["relative_residual"]) and 0 <= f["max_strain"] < 0.5
        assert (f["newton_iterations"] > 0) == (f["finished_by"] == "newton")
    if solver == "newton":
        assert all(f["finished_by"] == "newton" for f in frames)
    n = sum(f["finished_by"] == "newton" for f in frames)
    assert m["summary"]["finished_by_newton"] == n
    assert f"Newton stage finished {n} of 2 frames" in r.stdout


@pytest.mark.parametrize("spec, args, message", [
    ({"solver": "metamizer", "tol": 1e-14}, ["--iterations", "1", "--max-iterations", "1"], "missed the tolerance"),
    ({"strain_limit": 1e-12}, ["--iterations", "2"], "exceed the strain limit"),
])
def test_strict_refuses_a_bad_frame(tmp_path, weights_path, spec, args, message):
    r, out = bake(tmp_path, spec, *args, name="warn")
    assert r.returncode == 0, r.stderr
    assert f"warning: 2 frame(s) {message}" in r.stderr
    assert len(json.load(open(out / "manifest.json"))["extra"]["warnings"]) == 2
    r, out = bake(tmp_path, spec, *args, "--strict", name="strict")
    assert r.returncode == 1 and "--strict: this frame was not written" in r.stderr, r.stderr
    m = json.load(open(out / "manifest.json"))
    assert m["status"] == "failed" and m["frames_done"] == 0
    assert not (out / "frames" / "frame_0001.obj").exists()
    assert pc2.read_pc2(out / "cloth.pc2")[0].shape[0] == 0
