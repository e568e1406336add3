"""Issue #14's bad inputs through the real `metaphys bake` command: each gets a clear message and
exit 2, never a traceback, and nothing is written."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bake(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "metaphys", "bake", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def assert_clean_failure(r, out, message):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "manifest.json").exists()


SPEC_CASES = [
    ("cloth", {"colliders": {"type": "sphere", "center": [0, 0, 1], "radius": 0.2}},
     "colliders: expected a list of colliders"),
    ("cloth", {"colliders": [[0, 0, 1, 0.2]]}, 'colliders[0]: expected an object with "type": "sphere" or "box"'),
    ("cloth", {"colliders": "sphere"}, 'colliders: expected a list of colliders, got "sphere"'),
    ("smoke", {"obstacle_shapes": [{"type": "circle", "center": [8, 8]}]},
     "obstacle_shapes[0].radius: missing (expected a number > 0 (cells))"),
    ("cloth", {"frames": "ten"}, 'frames: expected an integer in [1, 1048574], got "ten"'),
    ("cloth", {"frames": None}, "frames: expected an integer in [1, 1048574], got null"),
    ("cloth", {"frames": 2.7}, "frames: expected an integer in [1, 1048574], got 2.7"),
    ("cloth", {"frames": -5}, "frames: expected an integer in [1, 1048574], got -5"),
    ("smoke", {"frames": -3}, "frames: expected an integer in [1, 1048574], got -3"),
    ("cloth", {"substeps": 1.5}, "substeps: expected an integer in [1, 1000], got 1.5"),
    ("cloth", {"stretch": True}, 'stretch: this key was replaced by "tension"'),
    ("cloth", {"bend": 0.1, "damping": 0.1}, 'bend: this key was replaced by "bending"'),
    ("smoke", {"vdb": "no"}, 'vdb: expected true or false, got "no"'),
    ("cloth", {"colliders": [{"type": "sphere", "center": [0, 0, 1], "radius": 0.2, "friction": -0.3}]},
     "colliders[0].friction: expected a number >= 0"),
    ("smoke", {"fps": 0}, "fps: expected a number in [1, 1000] (frames per second), got 0"),
    ("smoke", {"fps": -5}, "fps: expected a number in [1, 1000] (frames per second), got -5"),
    ("smoke", {"png_max": 0}, "png_max: expected a number > 0 (density), got 0"),
]


@pytest.mark.parametrize("kind, spec, message", SPEC_CASES, ids=[f"{k}-{m.split(':')[0]}-{i}" for i, (k, _, m)
                                                                 in enumerate(SPEC_CASES)])
def test_bad_spec_is_a_clear_error(tmp_path, kind, spec, message):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "o"
    r = bake(kind, "--out", str(out), "--spec", str(path), "--size", "16", "--progress", "json")
    assert_clean_failure(r, out, message)
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events and events[-1]["event"] == "error" and message in events[-1]["message"]


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads must be an integer >= 1 or 'auto', got '0'"),
    (["--threads", "abc"], "--threads must be an integer >= 1 or 'auto', got 'abc'"),
    (["--solver", "newton"], "--solver applies to cloth bakes only"),
    (["--tol", "-1"], "--tol must be a positive number"),
])
def test_bad_options_are_clear_errors(tmp_path, args, message):
    out = tmp_path / "o"
    assert_clean_failure(bake("smoke", "--out", str(out), "--size", "16", *args), out, message)


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path):
    out = tmp_path / "o"
    if torch.cuda.is_available():  # on a GPU machine: a device index that does not exist
        r = bake("cloth", "--out", str(out), "--size", "16", "--device", "cuda:99")
        assert_clean_failure(r, out, "--device cuda:99: only")
    else:
        r = bake("cloth", "--out", str(out), "--size", "16", "--device", "cuda")
        assert_clean_failure(r, out, "--device cuda: CUDA is not available here")


def test_truncated_weights_with_updated_checksum(tmp_path, weights_path):
    from metaphys.optim.weights import sha256_of
    w = tmp_path / "metamizer.pt"
    data = open(weights_path, "rb").read()
    w.write_bytes(data[: len(data) // 2])
    meta = json.load(open(os.path.splitext(weights_path)[0] + ".json"))
    meta["sha256"] = sha256_of(str(w))
    (tmp_path / "metamizer.json").write_text(json.dumps(meta))
    out = tmp_path / "o"
    r = bake("cloth", "--out", str(out), "--size", "16", "--frames", "1", "--weights", str(w))
    assert_clean_failure(r, out, f"cannot load the Metamizer weights {w}: not a readable TorchScript file")


def test_corrupted_state_on_resume(tmp_path, weights_path):
    out = tmp_path / "o"
    args = ["cloth", "--out", str(out), "--size", "16", "--iterations", "2", "--progress", "none"]
    assert bake(*args, "--frames", "2").returncode == 0
    state = out / ".state" / "frame_00002.pt"
    state.write_bytes(b"\x80\x04garbage" + state.read_bytes()[:40])
    r = bake(*args, "--frames", "3", "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot resume: the saved simulation state {state} is corrupted" in r.stderr
    # the finished frames are untouched
    m = json.load(open(out / "manifest.json"))
    assert m["frames_done"] == 2
    shutil.rmtree(out / ".state")
    r = bake(*args, "--frames", "3", "--resume")
    assert r.returncode == 2 and "simulation state for frame index 2" in r.stderr and "is missing" in r.stderr


def test_nan_weights_with_a_matching_checksum_fail_instead_of_a_frozen_cloth(tmp_path, weights_path):
    from metaphys.optim.weights import load_torchscript, sha256_of
    model = load_torchscript(weights_path)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    w = tmp_path / "metamizer.pt"
    torch.jit.save(model, str(w))
    meta = json.load(open(os.path.splitext(weights_path)[0] + ".json"))
    meta["sha256"] = sha256_of(str(w))
    (tmp_path / "metamizer.json").write_text(json.dumps(meta))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"solver": "metamizer", "tol": None}))
    out = tmp_path / "o"
    r = bake("cloth", "--out", str(out), "--size", "16", "--frames", "2", "--iterations", "3", "--spec", str(spec),
             "--weights", str(w), "--progress", "none")
    # the weights self-test at load refuses them before any frame (the driver's frozen-frame check is
    # the second line of defence: tests/test_bake_driver.py)
    assert r.returncode == 2, r.stderr
    assert f"the weights {w} cannot solve" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "manifest.json").exists()
