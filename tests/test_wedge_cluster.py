"""`metaphys wedge` as a user runs it (the CLI in a subprocess): on an existing Ray cluster started by
hand (`ray start --head`, token authentication on, as Ray 2.60 starts it) through `--address
host:port`; and a wedge interrupted with Ctrl-C in the middle of a variant, then `--resume`d: the
finished variant is left alone, the interrupted one continues from its last frame, the one that
never started is baked."""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TINY = {"resolution": [16, 16], "frames": 3, "iterations_per_step": 5, "flipbook": False, "vdb": False}

pytest.importorskip("ray")


def wedge_file(tmp_path, parameters, mode="product"):
    path = tmp_path / "wedge_in.json"
    path.write_text(json.dumps({"kind": "smoke", "base": TINY, "parameters": parameters, "mode": mode}))
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def ray_head(tmp_path):
    """A one-node Ray cluster started by hand with its own token (not ~/.ray's) and its own temp
    folder (so no other process's ray.init() finds it); stopped by ending `ray start --block`."""
    if not os.path.exists(os.path.join(BIN, "ray")):
        pytest.skip("the ray command is not installed beside this Python")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    log = open(tmp_path / "ray_head.log", "w")
    head = subprocess.Popen([os.path.join(BIN, "ray"), "start", "--head", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp, "--block"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Ray runtime started" in (tmp_path / "ray_head.log").read_text() or head.poll() is not None,
                 120, "ray start --head")
        assert head.poll() is None, (tmp_path / "ray_head.log").read_text()[-2000:]
        yield f"127.0.0.1:{port}", env, temp
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray start stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_address_runs_the_wedge_on_a_cluster_started_by_hand(ray_head, tmp_path):
    address, env, temp = ray_head
    out = tmp_path / "wedge"
    # the user's shell: the cluster's token in the environment, RAY_AUTH_MODE not set (the case that failed)
    r = subprocess.run([sys.executable, "-m", "metaphys", "wedge", wedge_file(tmp_path, {"buoyancy": [1.0, 2.0]}),
                        "--out", str(out), "--address", address, "--progress", "none"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "wedge.json").read_text())
    assert m["status"] == "complete" and m["settings"]["address"] == address
    assert [v["status"] for v in m["variants"]] == ["complete", "complete"]
    logs = [f for _, _, fs in os.walk(temp) for f in fs if f.startswith("worker-")]
    for v in m["variants"]:  # each ran in a worker of that cluster (a local instance logs under /tmp/ray)
        assert any(f.endswith(f"-{v['pid']}.out") for f in logs), (v["pid"], logs)
        bake = json.loads((out / v["folder"] / "manifest.json").read_text())
        assert bake["status"] == "complete" and bake["parameters"]["buoyancy"] == v["values"]["buoyancy"]


def test_a_wedge_cancelled_mid_variant_resumes_the_unfinished_variants_only(tmp_path):
    # zip: a short variant, a long one (cancelled mid-way), a short one that is still queued then
    # the long variant is long enough that the Ctrl-C (sent at its third frame) lands mid-variant on a
    # quiet machine too: with 30 frames a quiet run finished the whole wedge before Ray's cancel arrived
    long = 150
    spec = wedge_file(tmp_path, {"frames": [2, long, 2], "buoyancy": [1.0, 2.0, 3.0]}, mode="zip")
    out = tmp_path / "wedge"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = [sys.executable, "-m", "metaphys", "wedge", spec, "--out", str(out), "--workers", "1", "--progress", "none"]
    # Ctrl-C's default action in the child even where this test runs in a background job (a shell's
    # background jobs ignore SIGINT, the children inherit that, and Python then installs no handler)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    names = []

    def long_variant_has_frames():
        try:
            m = json.loads((out / "wedge.json").read_text())
            names[:] = [v["folder"] for v in m["variants"]]
            bake = json.loads((out / names[1] / "manifest.json").read_text())
        except (OSError, ValueError, IndexError):
            return False
        return m["variants"][0]["status"] == "complete" and len(bake.get("frames", [])) >= 3

    try:
        wait_for(long_variant_has_frames, 240, "the long variant's third frame")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    m = json.loads((out / "wedge.json").read_text())
    assert m["status"] == "cancelled"
    assert [v["status"] for v in m["variants"]] == ["complete", "cancelled", "cancelled"]
    first, second, third = (out / n for n in names)
    cancelled = json.loads((second / "manifest.json").read_text())
    assert cancelled["status"] == "cancelled" and 3 <= len(cancelled["frames"]) < long
    assert not (third / "manifest.json").exists()  # queued: never started
    kept = {f: os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(first) for f in fs}
    early = second / "density" / "density_0001.npz"
    early_stamp = early.stat().st_mtime_ns

    r = subprocess.run(argv + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "wedge.json").read_text())
    assert m["status"] == "complete" and [v["status"] for v in m["variants"]] == ["complete"] * 3
    assert {f: os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(first) for f in fs} == kept
    resumed = json.loads((second / "manifest.json").read_text())
    assert resumed["status"] == "complete" and len(resumed["frames"]) == long
    assert [f["sha256"] for f in resumed["frames"][:3]] == [f["sha256"] for f in cancelled["frames"][:3]]
    assert early.stat().st_mtime_ns == early_stamp  # frames baked before the cancel were not baked again
    runs = (out / "logs" / f"{names[1]}.log").read_text().split("$ metaphys bake")
    assert len(runs) == 3 and runs[2].splitlines()[0].endswith("--resume")
    assert json.loads((third / "manifest.json").read_text())["status"] == "complete"
