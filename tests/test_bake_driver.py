"""The bake driver with a scripted simulation: StepRecords reach the manifest and the JSON stream,
frames that miss the tolerance or the strain limit are warnings, or with strict an error before
the frame is written."""
import json
import os

import pytest

from metaphys.bake.driver import BakeError, OutputLock, frame_problems, run_bake
from metaphys.io.manifest import read_manifest
from metaphys.sims.common import StepRecord


class ScriptedSim:
    """Returns the given (converged, max_strain, finished_by) per frame."""

    def __init__(self, script):
        self.script, self.frame = script, 0

    def step(self):
        conv, strain, by = self.script[self.frame]
        self.frame += 1
        return StepRecord(self.frame, 7, 1e-9, 1e-3, 0, False, relative_residual=1e-7 if conv else 3e-4,
                          max_strain=strain, finished_by=by, newton_iterations=2 if by == "newton" else 0,
                          converged=conv)

    def finite(self):
        return True

    def state_dict(self):
        return {"frame": self.frame}

    def load_state_dict(self, sd):
        self.frame = sd["frame"]


class ListWriter:
    def __init__(self, out):
        self.out = out

    def start(self):
        pass

    def resume(self, done):
        pass

    def write(self, sim, number, index):
        name = f"f_{number:04d}.txt"
        with open(os.path.join(self.out, name), "w") as fh:
            fh.write(str(number))
        return {"mesh": name}

    def finish(self, sim):
        return {}


PARAMS = {"tol": 1e-6, "strain_limit": 0.5}
SCRIPT = [(True, 0.01, "metamizer"), (True, 0.02, "newton"), (False, 0.03, "newton"), (True, 0.7, "metamizer")]


def test_records_summary_and_warnings(tmp_path, capsys):
    out = str(tmp_path)
    m = run_bake("cloth", ScriptedSim(SCRIPT), ListWriter(out), out, 4, parameters=PARAMS, model_sha256="x",
                 progress="json", settings={"threads": 1, "format": "obj"})
    d = read_manifest(tmp_path / "manifest.json")
    assert [f["finished_by"] for f in d["frames"]] == ["metamizer", "newton", "newton", "metamizer"]
    assert [f["converged"] for f in d["frames"]] == [True, True, False, True]
    assert d["frames"][2]["relative_residual"] == 3e-4 and d["frames"][1]["newton_iterations"] == 2
    s = d["summary"]
    assert s["finished_by_newton"] == 2 and s["not_converged"] == [3] and s["over_strain_limit"] == [4]
    assert s["max_strain"] == 0.7 and s["max_strain_frame"] == 4 and s["threads"] == 1
    assert d["extra"]["warnings"] == ["frame 3: relative residual 3.00e-04 missed the tolerance 1e-06 (finished by newton)",
                                      "frame 4: max strain 70.0% exceeds the strain limit 50%"]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["start", "frame", "frame", "frame", "warning", "frame", "warning", "done"]
    assert events[3]["converged"] is False and events[-1]["summary"] == s
    assert m.summary() == s and not os.path.exists(tmp_path / ".metaphys.lock")


@pytest.mark.parametrize("script, message, written", [
    (SCRIPT, "frame 3: relative residual 3.00e-04 missed the tolerance 1e-06", 2),
    ([(True, 0.01, "newton"), (True, 0.9, "newton")], "frame 2: max strain 90.0% exceeds the strain limit 50%", 1),
])
def test_strict_stops_before_writing_the_bad_frame(tmp_path, script, message, written):
    out = str(tmp_path)
    with pytest.raises(BakeError) as info:
        run_bake("cloth", ScriptedSim(script), ListWriter(out), out, len(script), parameters=PARAMS,
                 model_sha256="x", progress="none", strict=True)
    assert message in str(info.value) and "--strict" in str(info.value) and info.value.code == 1
    d = read_manifest(tmp_path / "manifest.json")
    assert d["status"] == "failed" and d["frames_done"] == written
    assert sorted(f for f in os.listdir(out) if f.startswith("f_")) == [f"f_{k:04d}.txt" for k in range(1, written + 1)]


def test_frame_problems_without_a_gauge():
    # smoke and the pre-#12 cloth leave the gauge empty: nothing to complain about
    assert frame_problems(StepRecord(1, 5, 1e-3, 1e-2, 0, False), 1, 1e-6, 0.5) == []


def test_lock_names_the_holder(tmp_path):
    first = OutputLock(str(tmp_path), "smoke").acquire()
    with pytest.raises(BakeError) as info:
        OutputLock(str(tmp_path), "cloth").acquire()
    assert info.value.code == 2 and f"(smoke bake, pid {os.getpid()}" in str(info.value)
    first.release()
    OutputLock(str(tmp_path), "cloth").acquire().release()
    assert os.listdir(tmp_path) == []


class FrozenSim(ScriptedSim):
    def step(self):
        self.frame += 1
        return StepRecord(self.frame, 5, 1e-3, 1e-3, 20, False)


def test_a_bake_frozen_by_the_guard_fails_at_its_first_frame(tmp_path):
    out = str(tmp_path)
    with pytest.raises(BakeError, match=r"frame 1: the step guard rejected every optimizer step \(20 rejections in "
                                        r"5 iterations\).*weights cannot solve"):
        run_bake("cloth", FrozenSim([]), ListWriter(out), out, 3, parameters=PARAMS, model_sha256="x",
                 progress="none")
    d = read_manifest(tmp_path / "manifest.json")
    assert d["status"] == "failed" and d["frames_done"] == 0 and not any(f.startswith("f_") for f in os.listdir(out))


def test_cli_report_counts_newton_frames_and_warns(tmp_path, capsys):
    import argparse
    from metaphys.cli import _report
    out = str(tmp_path)
    m = run_bake("cloth", ScriptedSim(SCRIPT), ListWriter(out), out, 4, parameters=PARAMS, model_sha256="x",
                 progress="none")
    _report(argparse.Namespace(kind="cloth", progress="none", out=out), m, 4, 1.0)
    cap = capsys.readouterr()
    assert "Newton stage finished 2 of 4 frames; max strain 70.0% (frame 4)" in cap.out
    assert "warning: 1 frame(s) missed the tolerance 1e-06: frames 3 (--strict makes this an error)" in cap.err
    assert "warning: 1 frame(s) exceed the strain limit 50%: frames 4" in cap.err


class BrokenSim(ScriptedSim):
    def step(self):
        self.frame += 1
        if self.frame == 2:
            raise FloatingPointError("fluid solve produced non-finite values")
        return StepRecord(self.frame, 5, 1e-3, 1e-2, 0, False)


def test_a_sim_error_mid_bake_names_the_frame_and_keeps_finished_ones(tmp_path):
    out = str(tmp_path)
    with pytest.raises(BakeError) as info:
        run_bake("smoke", BrokenSim([]), ListWriter(out), out, 3, parameters={}, model_sha256="x", progress="none",
                 start_frame=10)
    assert info.value.code == 1
    assert str(info.value) == ("the bake failed at frame 11: FloatingPointError: fluid solve produced non-finite "
                               "values; the 1 finished frames are kept")
    d = read_manifest(tmp_path / "manifest.json")
    assert d["status"] == "failed" and d["frames_done"] == 1 and "frame 11" in d["error"]


def test_clearing_a_reused_folder_never_leaves_it(tmp_path):
    from metaphys.bake.driver import clear_previous_bake
    from metaphys.io.manifest import BakeManifest
    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("not the bake's")
    for name in ("cloth.pc2", "frames/frame_0001.obj", "frames/frame_0007.obj", "frames/notes.txt", "mine.txt"):
        (out / name).write_text("x")
    m = BakeManifest(out / "manifest.json", kind="cloth")
    m.add_frame(1, files={"mesh": "frames/frame_0001.obj", "evil": "../victim.txt", "abs": str(victim)})
    removed = clear_previous_bake(str(out), "cloth")
    assert victim.read_text() == "not the bake's"
    assert sorted(removed) == ["cloth.pc2", "frames/frame_0001.obj", "frames/frame_0007.obj"]
    assert sorted(os.listdir(out)) == ["frames", "mine.txt"] and os.listdir(out / "frames") == ["notes.txt"]


def test_pin_target_tracks_are_recorded_by_digest():
    import numpy as np
    from metaphys.bake.cloth import manifest_parameters
    a = {"pin_targets": np.zeros((3, 256, 3)), "frames": 2}
    b = {"pin_targets": np.zeros((3, 256, 3)) + 1e-9, "frames": 2}
    pa, pb = manifest_parameters(a), manifest_parameters(b)
    assert pa["pin_targets"]["shape"] == [3, 256, 3] and len(pa["pin_targets"]["sha256"]) == 64
    assert pa != pb and manifest_parameters(dict(a)) == pa and a["pin_targets"].shape == (3, 256, 3)


def test_a_second_bake_into_the_folder_needs_force(tmp_path):
    out = str(tmp_path)
    good = [(True, 0.01, "metamizer")] * 3
    run_bake("cloth", ScriptedSim(good), ListWriter(out), out, 3, parameters=PARAMS, model_sha256="x",
             progress="none")
    with pytest.raises(BakeError) as info:
        run_bake("cloth", ScriptedSim(good), ListWriter(out), out, 2, parameters=PARAMS, model_sha256="x",
                 progress="none")
    assert info.value.code == 2
    assert str(info.value).startswith(f"output folder {out!r} is not empty (it holds a complete cloth bake "
                                      "(3 frames): .state/, f_0001.txt")
    assert read_manifest(tmp_path / "manifest.json")["frames_done"] == 3  # refused: untouched
    m = run_bake("cloth", ScriptedSim(good), ListWriter(out), out, 2, parameters=PARAMS, model_sha256="x",
                 progress="none", force=True)
    assert m.frames_done == 2 and read_manifest(tmp_path / "manifest.json")["frames_done"] == 2


# ---- resume refuses damaged bakes (issue 25) -------------------------------------------------------------------
GOOD = [(True, 0.01, "metamizer")] * 4


def _bake(out, frames=2, **kw):
    return run_bake("cloth", ScriptedSim(GOOD), ListWriter(out), out, frames, parameters=PARAMS, model_sha256="x",
                    progress="none", **kw)


def _resume(out, frames=3):
    return _bake(out, frames, resume=True)


def _edit_manifest(path, edit):
    d = json.loads(open(path).read())
    edit(d)
    with open(path, "w") as fh:
        json.dump(d, fh)


def _refused(out, *fragments):
    with pytest.raises(BakeError) as info:
        _resume(out)
    assert info.value.code == 2
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert "--force instead of --resume" in str(info.value)
    return str(info.value)


def test_the_manifest_records_the_sha256_of_every_frame_file_and_state(tmp_path):
    from metaphys.io.manifest import sha256_file
    out = str(tmp_path)
    _bake(out)
    frames = read_manifest(tmp_path / "manifest.json")["frames"]
    assert frames[1]["sha256"] == {"mesh": sha256_file(tmp_path / "f_0002.txt")}
    assert frames[1]["state_sha256"] == sha256_file(tmp_path / ".state" / "frame_00002.pt")
    assert _resume(out).frames_done == 3  # intact: resumes


def test_resume_refuses_a_state_file_with_a_flipped_byte(tmp_path):
    out = str(tmp_path)
    _bake(out)
    state = tmp_path / ".state" / "frame_00002.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01  # torch would load this silently: only the checksum sees it
    state.write_bytes(bytes(data))
    _refused(out, f"the saved simulation state {state} is corrupted")


def test_resume_refuses_a_deleted_or_changed_frame_file(tmp_path):
    out = str(tmp_path)
    _bake(out)
    (tmp_path / "f_0001.txt").write_text("edited")
    os.remove(tmp_path / "f_0002.txt")
    msg = _refused(out, "f_0001.txt (frame 1) was changed", "f_0002.txt (frame 2) is missing",
                   str(tmp_path / "manifest.json"))
    assert "Traceback" not in msg


def test_resume_refuses_edited_frame_numbers(tmp_path):
    out = str(tmp_path)
    _bake(out)
    _edit_manifest(tmp_path / "manifest.json", lambda d: d["frames"][1].update(frame=7))
    _refused(out, str(tmp_path / "manifest.json"), '"frames"[1] is frame 7, expected 2')


@pytest.mark.parametrize("frames", [5, None, [1, 2], [{"frame": "1"}], "1-2", [{"frame": True}]])
def test_resume_refuses_a_manifest_whose_frames_are_not_frame_records(tmp_path, frames):
    out = str(tmp_path)
    _bake(out)
    _edit_manifest(tmp_path / "manifest.json", lambda d: d.update(frames=frames))
    _refused(out, str(tmp_path / "manifest.json"), "damaged or was edited")
    with pytest.raises(BakeError, match="manifest.json is not a readable metaphys bake manifest"):
        _bake(out, force=True)  # --force cannot trust its file list either: refused, nothing deleted
    assert (tmp_path / "f_0001.txt").exists()


def test_resume_refuses_a_manifest_without_checksums(tmp_path):
    out = str(tmp_path)
    _bake(out)
    _edit_manifest(tmp_path / "manifest.json", lambda d: [f.pop("sha256") for f in d["frames"]])
    _refused(out, "frame 1 records no checksums")


@pytest.mark.parametrize("text", ['{"schema": "metaphys.bake/1", "schema": "x"}', "[1, 2]", "[" * 100000 + "]" * 100000,
                                  '{"schema": "metaphys.bake/1", "start_frame": 1e400}'])
def test_unreadable_manifests_name_the_file(tmp_path, text):
    out = str(tmp_path)
    _bake(out)
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(BakeError) as info:
        _resume(out)
    assert info.value.code == 2 and str(tmp_path / "manifest.json") in str(info.value)


def test_resume_removes_the_temp_files_a_killed_bake_left(tmp_path):
    out = str(tmp_path)
    _bake(out)
    leftovers = [".manifest.k1l2.metaphys-tmp.json", ".state/.frame_00003.ab.metaphys-tmp.pt"]
    for name in leftovers:
        (tmp_path / name).write_text("half")
    (tmp_path / "notes.metaphys-tmp.txt").write_text("not hidden: not ours")
    _resume(out)
    assert not any((tmp_path / name).exists() for name in leftovers)
    assert (tmp_path / "notes.metaphys-tmp.txt").exists()


def test_state_holding_objects_is_refused_when_saved(tmp_path):
    from metaphys.bake.driver import plain_state
    import numpy as np
    assert plain_state({"r": [np.float64(0.5)], "n": np.int64(3)}) == {"r": [0.5], "n": 3}
    with pytest.raises(BakeError, match=r"state\['opt'\]\[0\] is a builtins.object"):
        plain_state({"opt": [object()]})


# ---- links and locks ------------------------------------------------------------------------------------------
def test_force_never_deletes_or_writes_through_a_link_leaving_the_folder(tmp_path):
    out, user = tmp_path / "out", tmp_path / "user"
    user.mkdir()
    (user / "frame_0001.obj").write_text("the user's own mesh")
    _bake(str(out))
    os.symlink(user, out / "frames")
    for kw in ({"force": True}, {"resume": True}):
        with pytest.raises(BakeError) as info:
            _bake(str(out), 3, **kw)
        assert info.value.code == 2
        assert f"{out / 'frames'} is a symbolic link to {str(user)!r}, outside the bake folder" in str(info.value)
    assert os.listdir(user) == ["frame_0001.obj"] and (user / "frame_0001.obj").read_text() == "the user's own mesh"
    assert read_manifest(out / "manifest.json")["frames_done"] == 2  # refused before anything changed


def test_a_link_inside_the_folder_is_fine(tmp_path):
    out = tmp_path / "out"
    _bake(str(out))
    (out / "real").mkdir()
    (out / "real" / "frame_0001.obj").write_text("old frame")
    os.symlink(out / "real", out / "frames")
    _bake(str(out), force=True)
    assert os.listdir(out / "real") == [] and os.path.islink(out / "frames")


def test_a_lock_path_that_is_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / ".metaphys.lock").mkdir()
    (tmp_path / ".metaphys.lock" / "keep.txt").write_text("x")
    with pytest.raises(BakeError) as info:
        _bake(str(tmp_path))
    assert info.value.code == 2
    assert str(info.value).startswith(f"{tmp_path / '.metaphys.lock'} is a folder, not a metaphys bake lock")
    assert (tmp_path / ".metaphys.lock" / "keep.txt").exists()


@pytest.mark.parametrize("holder", ['{"pid": "x", "host": "h"}', "[1]", '{"pid": -1, "host": "h"}', "{"])
def test_a_garbled_lock_is_taken_over_as_stale(tmp_path, holder):
    import socket
    (tmp_path / ".metaphys.lock").write_text(holder.replace('"h"', json.dumps(socket.gethostname())))
    OutputLock(str(tmp_path), "cloth").acquire().release()
    assert os.listdir(tmp_path) == []


def test_frame_files_sort_by_number():
    from metaphys.bake.owned import frame_sort_key
    names = ["density_10000.png", "density_9998.png", "density_0001.png", "notes.txt", "density_9999.png"]
    assert sorted(names, key=frame_sort_key) == ["density_0001.png", "density_9998.png", "density_9999.png",
                                                 "density_10000.png", "notes.txt"]


def test_two_identical_bakes_write_byte_identical_states(tmp_path):
    # torch.save names a zip's records after the file it writes: the states go through memory, so the
    # temporary file's random name cannot make two identical bakes differ (wedges compare variants byte for byte)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _bake(a)
    _bake(b)
    for name in sorted(os.listdir(os.path.join(a, ".state"))):
        with open(os.path.join(a, ".state", name), "rb") as fa, open(os.path.join(b, ".state", name), "rb") as fb:
            assert fa.read() == fb.read(), name
