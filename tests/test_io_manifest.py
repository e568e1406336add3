"""Manifests: strict JSON, atomic, resumable bake record."""
import json
import os

import numpy as np
import pytest

from metaphys.io.manifest import BakeManifest, read_manifest, sha256_file, write_manifest
from metaphys.version import __version__


def test_write_read_sorted_strict(tmp_path):
    p = tmp_path / "m.json"
    write_manifest(p, {"b": 1, "a": {"z": np.float32(0.5), "y": np.arange(3)}, "c": tmp_path / "x"})
    text = p.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert read_manifest(p) == {"a": {"y": [0, 1, 2], "z": 0.5}, "b": 1, "c": (tmp_path / "x").as_posix()}


def test_rejects_nan_and_keeps_old(tmp_path):
    p = tmp_path / "m.json"
    write_manifest(p, {"ok": 1})
    old = p.read_bytes()
    with pytest.raises(ValueError, match=r"\$\.frames\[1\]\.residual.*NaN"):
        write_manifest(p, {"frames": [{"residual": 1.0}, {"residual": float("nan")}]})
    with pytest.raises(ValueError, match="inf"):
        write_manifest(p, {"x": np.array([1.0, np.inf])})
    assert p.read_bytes() == old and os.listdir(tmp_path) == ["m.json"]
    p.write_text('{"x": NaN}')
    with pytest.raises(ValueError, match="NaN"):
        read_manifest(p)


def test_bake_manifest_frames_and_resume(tmp_path):
    p = tmp_path / "bake.json"
    w = tmp_path / "weights.pt"
    w.write_bytes(b"weights")
    sha = sha256_file(w)
    params = {"H": 32, "W": 32, "dt": 0.01}
    m = BakeManifest(p, kind="cloth", parameters=params, model_sha256=sha, outputs={"pc2": "cloth.pc2"})
    assert read_manifest(p)["frames_done"] == 0
    m.add_frame(1, iterations=12, residual=1e-6, wall_s=0.5)
    m.add_frame(iterations=10, residual=2e-6, wall_s=0.25)
    d = read_manifest(p)  # rewritten after every frame
    assert d["frames_done"] == 2 and d["wall_time_s"] == 0.75
    assert d["frames"][1] == {"frame": 2, "iterations": 10, "residual": 2e-6, "wall_s": 0.25}
    assert d["metaphys_version"] == __version__ and d["model_sha256"] == sha and d["status"] == "running"
    with pytest.raises(ValueError, match="frame 3.*NaN"):
        m.add_frame(residual=float("nan"))
    with pytest.raises(ValueError, match="expected frame 3"):
        m.add_frame(5)
    assert read_manifest(p)["frames_done"] == 2 and m.frames_done == 2

    r = BakeManifest.resume(p, parameters=params, model_sha256=sha)
    assert r.frames_done == 2 and r.next_frame == 3
    with pytest.raises(ValueError, match="'dt'"):
        BakeManifest.resume(p, parameters={**params, "dt": 0.02})
    with pytest.raises(ValueError, match="sha256"):
        BakeManifest.resume(p, model_sha256="0" * 64)
    r.add_frame(3, iterations=9, residual=1e-7)
    r.finish()
    d = read_manifest(p)
    assert d["status"] == "complete" and d["frames_done"] == 3 and d["outputs"] == {"pc2": "cloth.pc2"}
    r.truncate(1)
    assert read_manifest(p)["frames_done"] == 1
    assert sorted(os.listdir(tmp_path)) == ["bake.json", "weights.pt"]  # no temp files left


def test_settings_kind_and_summary(tmp_path):
    p = tmp_path / "bake.json"
    m = BakeManifest(p, kind="cloth", parameters={"frames": 2, "strain_limit": 0.1},
                     settings={"format": "obj", "threads": 1})
    m.add_frame(1, iterations=3, residual=1e-6, finished_by="newton", converged=True, max_strain=0.05,
                guard_rejections=2)
    m.add_frame(2, iterations=3, residual=1e-3, finished_by="metamizer", converged=False, max_strain=0.2)
    d = read_manifest(p)
    assert d["settings"] == {"format": "obj", "threads": 1}
    assert d["summary"] == {"frames": 2, "finished_by_newton": 1, "not_converged": [2], "max_strain": 0.2,
                            "max_strain_frame": 2, "strain_limit": 0.1, "over_strain_limit": [2],
                            "guard_rejections": 2, "threads": 1}
    with pytest.raises(ValueError, match=r"threads: the bake was written with 1, resume asked for 2"):
        BakeManifest.resume(p, settings={"threads": 2})
    with pytest.raises(ValueError, match="it is a cloth bake, not a smoke bake"):
        BakeManifest.resume(p, kind="smoke")
    before = p.read_text()
    r = BakeManifest.resume(p, parameters={"frames": 5, "strain_limit": 0.1}, settings={"format": "obj"},
                            ignore=("frames",), save=False)
    assert r.frames_done == 2 and p.read_text() == before  # save=False: nothing written yet
    with pytest.raises(ValueError, match="'frames'"):
        BakeManifest.resume(p, parameters={"frames": 5, "strain_limit": 0.1})


@pytest.mark.parametrize("text, message", [
    ('{"a": 1, "a": 2}', "repeats the key 'a'"),
    ("[1, 2]", "must hold a JSON object, got list"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"a": ', "is not valid JSON"),
])
def test_read_manifest_refuses_what_is_not_one_json_object(tmp_path, text, message):
    p = tmp_path / "manifest.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_manifest(p)
    assert str(p) in str(info.value)


@pytest.mark.parametrize("edit, message", [
    ({"frames": 3}, '"frames" must be a list of frame records, got 3'),
    ({"frames": None}, '"frames" must be a list of frame records, got null'),
    ({"frames": [1]}, r'"frames"\[0\] must be a frame record \(an object\), got 1'),
    ({"frames": [{"frame": 2}]}, r'"frames"\[0\] is frame 2, expected 1'),
    ({"frames": [{"frame": 1, "files": []}]}, r'"frames"\[0\].files must be an object'),
    ({"start_frame": "1"}, '"start_frame" must be an integer'),
    ({"settings": [1]}, '"settings" must be an object'),
])
def test_loading_a_damaged_manifest_names_the_file_and_the_field(tmp_path, edit, message):
    p = tmp_path / "manifest.json"
    BakeManifest(p, kind="cloth").add_frame(1, iterations=1, residual=0.0, wall_s=0.1)
    write_manifest(p, {**read_manifest(p), **edit})
    with pytest.raises(ValueError, match=message) as info:
        BakeManifest.load(p)
    assert str(info.value).startswith(f"{str(p)!r} is damaged or was edited: ")
