"""`metaphys bake` end to end: promised files, resume after an interruption, clear input errors."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from metaphys.io import pc2
from metaphys.io.manifest import read_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bake(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "metaphys", "bake", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600, **kw)


def fixed_budget(tmp_path):
    """A cloth spec with the Metamizer alone at a fixed iteration budget (no tolerance, no Newton)."""
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps({"solver": "metamizer", "tol": None}))
    return str(path)


def test_cloth_bake_writes_every_promised_file(tmp_path, weights_path):
    out = tmp_path / "cloth"
    r = bake("cloth", "--out", str(out), "--spec", fixed_budget(tmp_path), "--size", "16", "--frames", "3",
             "--iterations", "5", "--progress", "json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["start", "frame", "frame", "frame", "done"]
    for e in events[1:4]:  # the full StepRecord travels with every frame event
        assert {"relative_residual", "max_strain", "finished_by", "newton_iterations", "converged"} <= set(e)
        assert e["finished_by"] == "metamizer" and e["newton_iterations"] == 0
    assert events[-1]["summary"]["frames"] == 3 and events[-1]["summary"]["finished_by_newton"] == 0
    for name in ("cloth.pc2", "rest.obj", "manifest.json", "preview.gif", "frames/frame_0001.obj",
                 "frames/frame_0003.obj"):
        assert (out / name).exists(), name
    frames, start, _ = pc2.read_pc2(out / "cloth.pc2")
    assert frames.shape == (3, 256, 3) and start == 1.0
    m = read_manifest(out / "manifest.json")
    assert m["status"] == "complete" and m["frames_done"] == 3 and len(m["model_sha256"]) == 64
    assert all(f["iterations"] == 5 and np.isfinite(f["residual"]) for f in m["frames"])
    assert [f["finished_by"] for f in m["frames"]] == ["metamizer"] * 3
    assert m["summary"]["frames"] == 3 and m["summary"]["threads"] == 1 and m["settings"]["format"] == "obj"
    assert m["parameters"]["solver"] == "metamizer" and m["parameters"]["tension"] == 250.0


def test_smoke_bake_writes_every_promised_file(tmp_path, weights_path):
    out = tmp_path / "smoke"
    r = bake("smoke", "--out", str(out), "--size", "16", "--frames", "2", "--iterations", "5", "--progress", "none")
    assert r.returncode == 0, r.stderr
    for name in ("manifest.json", "preview.gif", "flipbook_color.png", "flipbook_motion.png", "flipbook_normal.png",
                 "flipbook_emissive.png", "flipbook.json", "flipbook_preview.gif", "density/density_0001.png",
                 "density/density_0002.npz"):
        assert (out / name).exists(), name
    from metaphys.io import vdb
    if vdb.vdb_available():
        assert (out / "density" / "density_0002.vdb").exists()
    npz = np.load(out / "density" / "density_0002.npz")
    assert npz["density"].shape == (16, 16) and npz["velocity"].shape == (16, 16, 2)


def test_smoke_flipbook_flags_and_spec_keys_end_to_end(tmp_path, weights_path):
    """--flipbook and its options, and the same as spec keys, reach the sheets; the sheet's motion
    vectors (decoded from the PNG, as an engine reads them) carry frame k closer to frame k+1."""
    from metaphys.io import flipbook as fb
    spec = tmp_path / "push.json"  # an upward push: the plume moves about a cell per frame
    spec.write_text(json.dumps({"emitter_velocity": [0.0, 1.0], "emitter_heat": 2.0}))
    out = tmp_path / "flags"
    r = bake("smoke", "--out", str(out), "--spec", str(spec), "--size", "24", "--frames", "10", "--iterations", "5",
             "--progress", "none", "--flipbook", "2x3", "--flipbook-loop", "2", "--flipbook-loop-mode", "crossfade",
             "--flipbook-cell", "32",
             "--flipbook-range", "3:10", "--flipbook-alpha", "premultiplied", "--flipbook-engine", "unreal")
    assert r.returncode == 0, r.stderr
    side = fb.read_sidecar(out)
    assert (side["rows"], side["columns"], side["frames"], side["cell_width"]) == (2, 3, 6, 32)
    assert side["source_frames"] == list(range(3, 11)) and side["loop"]["frames"] == 2 and side["fps"] == 24
    assert side["alpha_mode"] == "premultiplied" and side["engine"] == "unreal" and side["temperature_max"] > 0
    m = read_manifest(out / "manifest.json")
    assert m["outputs"]["flipbook_motion"] == "flipbook_motion.png" and m["parameters"]["flipbook_loop"] == 2
    seam = m["extra"]["flipbook"]["loop_seam"]
    assert seam["seam"] <= seam["mean"], seam
    back = fb.read_flipbook(out)
    assert np.abs(back["rgb"] - back["alpha"][..., None]).max() <= 1 / 255 + 1e-9  # premultiplied
    px = back["motion"] * np.array([32, 32])   # cell UV (v down: unreal) -> pixels (col, row)
    a = back["alpha"]
    for k in range(3, 5):  # past the loop's crossfade: plain consecutive frames
        assert np.abs(fb.warp(a[k], px[k]) - a[k + 1]).mean() < np.abs(a[k] - a[k + 1]).mean()

    # the same through the spec: every 2nd frame, no flipbook for cloth-only flags
    spec2 = tmp_path / "spec.json"
    spec2.write_text(json.dumps({"flipbook_layout": [2, 2], "flipbook_step": 2, "flipbook_motion_bits": 8,
                                 "flipbook_loop": 1, "flipbook_loop_mode": "two_phase"}))
    out2 = tmp_path / "spec"
    r = bake("smoke", "--out", str(out2), "--spec", str(spec2), "--size", "16", "--frames", "7", "--iterations", "3",
             "--progress", "none")
    assert r.returncode == 0, r.stderr
    side = fb.read_sidecar(out2)
    assert side["source_frames"] == [1, 3, 5, 7] and side["fps"] == 12 and side["channels"]["motion"]["bits"] == 8
    assert fb.read_png(out2 / "flipbook_motion.png").dtype == np.uint8
    # two_phase: no frames consumed by the loop (the same 4 frames fill the 4 cells)
    assert side["frames"] == 4 and side["loop"] == {**side["loop"], "mode": "two_phase", "frames": 1}
    assert read_manifest(out2 / "manifest.json")["extra"]["flipbook"]["loop_seam"]["seam"] >= 0
    r = bake("smoke", "--out", str(tmp_path / "none"), "--size", "16", "--frames", "1", "--iterations", "2",
             "--progress", "none", "--no-flipbook")
    assert r.returncode == 0 and not (tmp_path / "none" / "flipbook.json").exists()
    r = bake("cloth", "--out", str(tmp_path / "c"), "--flipbook", "4x4")
    assert r.returncode == 2 and "--flipbook applies to smoke bakes only" in r.stderr
    r = bake("smoke", "--out", str(tmp_path / "s"), "--flipbook", "4by4")
    assert r.returncode == 2 and "expected ROWSxCOLS" in r.stderr


def test_interrupted_bake_resumes_to_the_same_result(tmp_path, weights_path):
    args = ["--size", "16", "--frames", "5", "--iterations", "4", "--format", "none", "--spec", fixed_budget(tmp_path)]
    ref = tmp_path / "ref"
    assert bake("cloth", "--out", str(ref), *args, "--progress", "none").returncode == 0
    out = tmp_path / "cut"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "metaphys", "bake", "cloth", "--out", str(out), *args,
                             "--progress", "json"], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    for line in proc.stdout:
        if json.loads(line).get("index") == 1:
            proc.send_signal(signal.SIGTERM)
            break
    rc = proc.wait(timeout=300)
    assert rc == 130
    m = read_manifest(out / "manifest.json")
    assert m["status"] == "cancelled" and 2 <= m["frames_done"] < 5
    assert pc2.read_pc2(out / "cloth.pc2")[0].shape[0] == m["frames_done"]
    r = bake("cloth", "--out", str(out), *args, "--resume", "--progress", "none")
    assert r.returncode == 0, r.stderr
    a, b = pc2.read_pc2(ref / "cloth.pc2")[0], pc2.read_pc2(out / "cloth.pc2")[0]
    assert np.array_equal(a, b)
    assert read_manifest(out / "manifest.json")["status"] == "complete"


@pytest.mark.parametrize("args, message", [
    (["--frames", "-3"], "--frames must be >= 1"),
    (["--size", "-2"], "--size must be an integer from 16 (the optimizer's smallest grid) to 4096, got -2"),
    (["--threads", "0"], "--threads must be an integer >= 1 or 'auto', got '0'"),
    (["--threads", "abc"], "--threads must be an integer >= 1 or 'auto', got 'abc'"),
    (["--device", "tpu"], "--device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["--weights", "/nonexistent/metamizer.pt"], "not found: /nonexistent/metamizer.pt"),
])
def test_bad_arguments_fail_fast_with_exit_2(tmp_path, args, message):
    out = tmp_path / "o"
    r = bake("cloth", "--out", str(out), *args, "--progress", "none")
    assert r.returncode == 2
    assert message in r.stderr
    assert not (out / "manifest.json").exists()


def test_bad_spec_values_fail_before_any_work(tmp_path, weights_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"rows": 16, "cols": 16, "pin_weights": [2.0] * 256}))
    out = tmp_path / "o"
    r = bake("cloth", "--out", str(out), "--spec", str(spec), "--progress", "json")
    assert r.returncode == 2
    assert "pin_weights: expected values in [0, 1]" in r.stdout and "pin_weights" in r.stderr
    assert not out.exists() or not (out / "manifest.json").exists()
    spec.write_text(json.dumps({"rows": 16, "bogus": 1}))
    r = bake("cloth", "--out", str(out), "--spec", str(spec))
    assert r.returncode == 2 and "bogus: unknown key" in r.stderr


def test_unwritable_output_folder_is_reported(tmp_path, weights_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = bake("smoke", "--out", str(blocker / "sub"), "--size", "16", "--frames", "1", "--progress", "none")
    assert r.returncode == 2 and "not writable" in r.stderr


def test_export_weights_never_overwrites_without_overwrite(tmp_path):
    from metaphys.cli import build_parser
    from metaphys.optim.metamizer import MetamizerNet
    a = build_parser().parse_args(["export-weights", "snap.pt"])
    assert a.out == os.path.join("weights", "metamizer.pt") and a.overwrite is False  # the default is guarded
    torch.manual_seed(0)
    snap = tmp_path / "best.pt"
    torch.save({"ema": MetamizerNet(hidden=6).state_dict(), "hidden": 6}, snap)
    target = tmp_path / "metamizer.pt"
    target.write_bytes(b"the weights everyone bakes with")
    r = subprocess.run([sys.executable, "-m", "metaphys", "export-weights", str(snap), "--out", str(target)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and f"{target} already exists" in r.stderr and "--overwrite" in r.stderr
    assert target.read_bytes() == b"the weights everyone bakes with"
    r = subprocess.run([sys.executable, "-m", "metaphys", "export-weights", str(snap), "--out", str(target),
                        "--overwrite"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert target.read_bytes()[:2] == b"PK" and json.load(open(tmp_path / "metamizer.json"))["hidden"] == 6


def test_eval_report_states_the_machine_it_ran_on(tmp_path):
    from metaphys.eval.harness import write_report
    torch.set_num_threads(1)
    report = tmp_path / "eval.md"
    write_report({}, str(report), "test weights", 1.0)
    text = report.read_text()
    machine = text.split("Machine: ", 1)[1].split(". Wall time", 1)[0]
    assert f"{os.cpu_count()} logical cores" in machine and f"torch {torch.__version__}" in machine
    assert "1 torch thread(s)" in machine and "training run shared" not in machine
    with open("/proc/cpuinfo") as fh:  # the CPU model read at run time (Linux)
        model = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    assert machine.startswith(model)
