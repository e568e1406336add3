"""Owned output folders: one bake at a time, a non-empty folder is refused unless --resume (the same
bake) or --force (which clears the previous bake's files, and only those), --resume keeps the recorded format/threads and may extend a bake; rest.obj fits
cloth.pc2 with vertex_index + output_matrix; smoke fps sets the time per frame and the playback rate."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from metaphys.io import pc2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def bake(*args):
    return subprocess.run([sys.executable, "-m", "metaphys", "bake", *args], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=600)


def cloth(out, *args):
    return bake("cloth", "--out", str(out), "--size", "16", "--iterations", "2", "--progress", "none", *args)


def manifest(out):
    with open(out / "manifest.json") as fh:
        return json.load(fh)


def test_second_bake_into_a_busy_folder_refuses(tmp_path, weights_path):
    out = tmp_path / "o"
    first = subprocess.Popen([sys.executable, "-m", "metaphys", "bake", "cloth", "--out", str(out), "--size", "16",
                              "--frames", "40", "--iterations", "2", "--progress", "json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    try:
        for line in first.stdout:
            if json.loads(line)["event"] == "frame":
                first.send_signal(signal.SIGSTOP)  # hold it mid-bake, deterministically
                break
        r = bake("cloth", "--out", str(out), "--size", "16", "--frames", "3", "--iterations", "2")
        assert r.returncode == 2, r.stderr
        assert f"another bake is writing into {str(out)!r} (cloth bake, pid {first.pid}" in r.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    first.stdout.read()
    assert first.wait(timeout=300) == 0
    m = manifest(out)  # the first bake's files only
    assert m["frames_done"] == 40 and m["parameters"]["frames"] == 40
    assert pc2.read_pc2(out / "cloth.pc2")[0].shape[0] == 40
    assert not (out / ".metaphys.lock").exists()


def test_stale_lock_of_a_dead_bake_is_taken_over(tmp_path, weights_path):
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket
    (out / ".metaphys.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    r = cloth(out, "--frames", "1")
    assert r.returncode == 0, r.stderr
    assert not (out / ".metaphys.lock").exists()


def test_reused_folder_without_force_is_refused_and_untouched(tmp_path, weights_path):
    out = tmp_path / "s"
    args = ["smoke", "--out", str(out), "--size", "16", "--iterations", "2", "--progress", "none"]
    assert bake(*args, "--frames", "3").returncode == 0
    before = {p: os.path.getmtime(p) for p in out.rglob("*")}
    r = bake(*args, "--frames", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"output folder {str(out)!r} is not empty (it holds a complete smoke bake (3 of 3 frames)" in r.stderr
    # the listing names the first 8 entries (the folder holds the flipbook sheets too) and says how many more
    assert "density/" in r.stderr and "flipbook.json" in r.stderr and "more)" in r.stderr
    assert "--resume" in r.stderr and "--force" in r.stderr
    assert {p: os.path.getmtime(p) for p in out.rglob("*")} == before  # nothing was touched
    assert manifest(out)["frames_done"] == 3 and json.load(open(out / "flipbook.json"))["frames"] == 3


def test_folder_with_foreign_files_is_refused_unless_forced(tmp_path, weights_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = cloth(out, "--frames", "1")
    assert r.returncode == 2 and f"output folder {str(out)!r} is not empty (it holds notes.txt)" in r.stderr
    assert "--resume" not in r.stderr and sorted(os.listdir(out)) == ["notes.txt"]
    r = cloth(out, "--frames", "1", "--force")
    assert r.returncode == 0, r.stderr
    assert (out / "notes.txt").read_text() == "mine" and manifest(out)["frames_done"] == 1


def test_resume_without_a_bake_in_a_non_empty_folder_is_refused(tmp_path, weights_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = cloth(out, "--frames", "1", "--resume")
    assert r.returncode == 2 and "is not empty (it holds notes.txt)" in r.stderr, r.stderr
    r = cloth(out, "--frames", "1", "--resume", "--force")
    assert r.returncode == 2 and "--force and --resume contradict each other" in r.stderr


def test_forced_reuse_keeps_no_old_frames_and_no_foreign_file_is_touched(tmp_path, weights_path):
    out = tmp_path / "s"
    args = ["smoke", "--out", str(out), "--size", "16", "--iterations", "2", "--progress", "none"]
    assert bake(*args, "--frames", "4").returncode == 0
    (out / "notes.txt").write_text("mine")
    (out / "density" / "keep.txt").write_text("mine too")
    r = bake(*args, "--frames", "2", "--force")
    assert r.returncode == 0, r.stderr
    names = sorted(os.listdir(out / "density"))
    assert [n for n in names if n.endswith(".npz")] == ["density_0001.npz", "density_0002.npz"]
    assert [n for n in names if n.endswith(".png")] == ["density_0001.png", "density_0002.png"]
    assert "keep.txt" in names and (out / "notes.txt").read_text() == "mine"
    assert json.load(open(out / "flipbook.json"))["frames"] == 2 and manifest(out)["frames_done"] == 2


def test_reused_cloth_folder_with_another_format(tmp_path, weights_path):
    out = tmp_path / "c"
    assert cloth(out, "--frames", "3").returncode == 0
    assert cloth(out, "--frames", "2", "--format", "ply", "--force").returncode == 0
    assert sorted(os.listdir(out / "frames")) == ["frame_0001.ply", "frame_0002.ply"]
    assert cloth(out, "--frames", "2", "--format", "none", "--force").returncode == 0
    assert not (out / "frames").exists()


def test_folder_with_unowned_bake_files_is_refused(tmp_path, weights_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "cloth.pc2").write_bytes(b"somebody else's cache")
    r = cloth(out, "--frames", "1", "--force")  # --force replaces a bake, never files no bake owns
    assert r.returncode == 2 and "already holds cloth.pc2 but no metaphys manifest.json owns them" in r.stderr
    assert (out / "cloth.pc2").read_bytes() == b"somebody else's cache"


def test_resume_keeps_recorded_settings_and_may_extend(tmp_path, weights_path):
    ref, out = tmp_path / "ref", tmp_path / "o"
    assert cloth(ref, "--frames", "4", "--threads", "1").returncode == 0
    assert cloth(out, "--frames", "2", "--threads", "1").returncode == 0
    r = cloth(out, "--frames", "4", "--resume", "--threads", "2")
    assert r.returncode == 2 and "threads: the bake was written with 1, resume asked for 2" in r.stderr
    r = cloth(out, "--frames", "4", "--resume", "--format", "ply")
    assert r.returncode == 2 and "format: the bake was written with 'obj', resume asked for 'ply'" in r.stderr
    assert manifest(out)["status"] == "complete" and manifest(out)["frames_done"] == 2  # refused: untouched
    r = cloth(out, "--frames", "4", "--resume")  # the recorded format and threads
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out / "frames")) == [f"frame_000{k}.obj" for k in range(1, 5)]
    assert np.array_equal(pc2.read_pc2(out / "cloth.pc2")[0], pc2.read_pc2(ref / "cloth.pc2")[0])
    m = manifest(out)
    assert m["frames_done"] == 4 and m["parameters"]["frames"] == 4 and m["status"] == "complete"
    r = cloth(out, "--frames", "3", "--resume")
    assert r.returncode == 2 and "already has 4 frames, more than the 3 asked for" in r.stderr


def test_rest_obj_fits_the_cache_with_vertex_index_and_output_matrix(tmp_path, weights_path):
    from metaphys.sims.cloth import flat_cloth
    rng = np.random.default_rng(0)
    order = rng.permutation(256)
    matrix = np.diag([2.0, 2.0, 2.0, 1.0])
    matrix[:3, 3] = [1.0, -3.0, 0.5]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"rows": 16, "cols": 16, "vertex_index": order.tolist(),
                                "output_matrix": matrix.tolist()}))
    out = tmp_path / "c"
    r = cloth(out, "--spec", str(spec), "--frames", "1", "--format", "none")
    assert r.returncode == 0, r.stderr
    lines = (out / "rest.obj").read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:4]] for ln in lines if ln.startswith("v ")])
    faces = np.array([[int(t.split("/")[0]) - 1 for t in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    rest = flat_cloth(16, 16, 1.0, 1.0)
    expected = np.empty_like(rest)
    expected[order] = rest @ matrix[:3, :3].T + matrix[:3, 3]
    assert np.allclose(v, expected)
    frame = pc2.read_pc2(out / "cloth.pc2")[0][0]
    edges = np.linalg.norm(frame[faces] - frame[np.roll(faces, 1, axis=1)], axis=-1)
    rest_edge = 2.0 / 15  # 1 m cloth, 15 edges, scaled by 2
    assert edges.max() < 1.5 * rest_edge and edges.min() > 0.5 * rest_edge


def test_smoke_bakes_at_24_and_48_fps_show_the_same_plume_at_the_same_times(tmp_path, weights_path):
    """fps sets the time per frame (the sim runs in seconds), and the playback rate of the outputs."""
    spec = tmp_path / "spec.json"
    density, rates = {}, {}
    for fps, frames in ((24, 6), (48, 12)):
        spec.write_text(json.dumps({"fps": fps}))
        out = tmp_path / f"s{fps}"
        r = bake("smoke", "--out", str(out), "--spec", str(spec), "--size", "24", "--frames", str(frames),
                 "--progress", "none")
        assert r.returncode == 0, r.stderr
        rates[fps] = json.load(open(out / "flipbook.json"))["fps"]
        m = manifest(out)
        assert m["parameters"]["fps"] == fps and m["extra"]["min_density"] >= 0
        assert all(f["min_density"] >= 0 and f["substeps"] >= 1 for f in m["frames"])
        assert m["frames"][-1]["time_s"] == pytest.approx(0.25)
        npz = np.load(out / "density" / f"density_{frames:04d}.npz")
        density[fps] = npz["density"]                                              # both at t = 0.25 s
        assert npz["temperature"].shape == (24, 24) and not npz["temperature"].any()  # no emitter_heat: cold
    assert rates == {24: 24.0, 48: 48.0}
    a, b = density[24], density[48]
    assert a.max() > 0.1 and np.linalg.norm(b - a) <= 0.03 * np.linalg.norm(a)


# ---- resume checks every recorded file (issue 25); in-process: a bake of 16^2 takes a second ----------------
def _bake_here(kind, out, *args):
    from metaphys.cli import main
    return main(["bake", kind, "--out", str(out), "--size", "16", "--iterations", "2", "--progress", "none", *args])


def _refused_resume(kind, out, capsys, *fragments):
    before = manifest(out)
    capsys.readouterr()
    assert _bake_here(kind, out, "--frames", "4", "--resume") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--force instead of --resume" in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert manifest(out) == before  # refused before anything was written


def test_resume_refuses_a_cloth_bake_whose_frames_folder_was_deleted(tmp_path, weights_path, capsys):
    out = tmp_path / "o"
    assert _bake_here("cloth", out, "--frames", "2") == 0
    shutil.rmtree(out / "frames")
    _refused_resume("cloth", out, capsys, "frames/frame_0001.obj (frame 1) is missing",
                    "frames/frame_0002.obj (frame 2) is missing")


def test_resume_refuses_a_damaged_pc2_sample(tmp_path, weights_path, capsys):
    out = tmp_path / "o"
    assert _bake_here("cloth", out, "--frames", "2") == 0
    data = bytearray((out / "cloth.pc2").read_bytes())
    data[-5] ^= 0x40  # the last sample's last float
    (out / "cloth.pc2").write_bytes(bytes(data))
    _refused_resume("cloth", out, capsys, "sample 1 of cloth.pc2 (frame 2) was changed")


def test_resume_refuses_a_smoke_bake_missing_a_density_frame(tmp_path, weights_path, capsys):
    out = tmp_path / "o"
    assert _bake_here("smoke", out, "--frames", "3") == 0
    os.remove(out / "density" / "density_0002.npz")
    _refused_resume("smoke", out, capsys, "density/density_0002.npz (frame 2) is missing")


def test_an_intact_bake_resumes_after_the_checks(tmp_path, weights_path):
    out = tmp_path / "o"
    assert _bake_here("smoke", out, "--frames", "2") == 0
    assert _bake_here("smoke", out, "--frames", "3", "--resume") == 0
    m = manifest(out)
    assert m["frames_done"] == 3 and all(len(f["sha256"]) == len(f["files"]) for f in m["frames"])
