"""`metaphys bake` refuses careless or hostile input with one clear line and exit 2, before it imports
the engine: no traceback, no torch import, no bake that never ends. Each case runs in one fresh Python
(torch is already imported in this pytest process), so ``"torch" not in sys.modules`` is meaningful."""
import json
import os
import subprocess
import sys

import pytest

_RUNNER = r"""
import contextlib, io, json, sys
from metaphys.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code
    results.append({"rc": rc, "stderr": err.getvalue()})
print(json.dumps({"results": results, "torch": "torch" in sys.modules}))
"""


def run_cli(cases):
    """Run ``main(argv)`` for each argv in one fresh interpreter; (results, whether torch was imported)."""
    r = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(cases)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    return out["results"], out["torch"]


def spec_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_hostile_specs_and_options_are_refused_without_importing_the_engine(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # sparse: 16 MB + 1 byte without writing them
        fh.truncate(16 * 1024 * 1024 + 1)
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)  # a reader that opens it naively blocks forever
    (tmp_path / "latin1.json").write_bytes(b'{"fps": 24, "note": "\xe9"}')
    out = str(tmp_path / "out")
    cases = {
        "--frames -1": (["--frames", "-1"], "--frames must be >= 1, got -1"),
        "100,000-deep JSON": (["--spec", spec_file(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)],
                              "nests arrays or objects too deeply to parse"),
        "start_frame 10**400": (["--spec", spec_file(tmp_path, "start.json", '{"start_frame": 1' + "0" * 400 + "}")],
                                "start_frame: expected an integer in [-1048574, 1048574], got an integer of 401 digits"),
        "fps 1e-300": (["--spec", spec_file(tmp_path, "fps.json", '{"fps": 1e-300}')],
                       "fps: expected a number in [1, 1000] (frames per second), got 1e-300"),
        "frames 10**400": (["--spec", spec_file(tmp_path, "frames.json", '{"frames": 1' + "0" * 400 + "}")],
                           "frames: expected an integer in [1, 1048574]"),
        "--frames 10**400": (["--frames", "1" + "0" * 400], "frames: expected an integer in [1, 1048574]"),
        "duplicate key": (["--spec", spec_file(tmp_path, "dup.json", '{"fps": 24, "frames": 3, "fps": 30}')],
                          'key "fps" appears twice in one object'),
        "/dev/zero": (["--spec", "/dev/zero"], "is not a regular file"),
        "FIFO": (["--spec", str(fifo)], "is not a regular file"),
        "16 MB + 1": (["--spec", str(big)], "is larger than 16 MB"),
        "not UTF-8": (["--spec", str(tmp_path / "latin1.json")], "is not UTF-8 text"),
        "missing file": (["--spec", str(tmp_path / "nope.json")], "cannot read spec file"),
        "--size 10**6": (["--size", "1000000"], "--size must be an integer from 16"),
    }
    results, torch_imported = run_cli([["bake", "cloth", "--out", out, "--progress", "none", *argv]
                                       for argv, _ in cases.values()])
    for (name, (_, message)), res in zip(cases.items(), results):
        assert res["rc"] == 2, (name, res)
        assert message in res["stderr"] and "Traceback" not in res["stderr"], (name, res["stderr"][-800:])
        assert res["stderr"].startswith("metaphys bake: error: "), (name, res["stderr"][:300])
    assert not torch_imported, "a usage error imported torch (parse and validate before the engine)"
    assert not os.path.exists(out)


def test_usage_errors_of_argparse_and_smoke_specs_are_fast_too(tmp_path):
    results, torch_imported = run_cli([
        ["bake", "cloth", "--out", str(tmp_path), "--frames", "ten"],
        ["bake", "smoke", "--out", str(tmp_path), "--spec", spec_file(tmp_path, "s.json", '{"fps": 0}')],
        ["bake", "--help"],
    ])
    assert results[0]["rc"] == 2 and "invalid int value: 'ten'" in results[0]["stderr"]
    assert results[1]["rc"] == 2 and "fps: expected a number in [1, 1000]" in results[1]["stderr"]
    assert results[2]["rc"] == 0
    assert not torch_imported


@pytest.mark.parametrize("flag", ["--resume", "--force"])
def test_duplicate_keys_are_refused_on_every_path(tmp_path, flag):
    """A refused spec never reaches the bake folder, whatever the mode."""
    spec = spec_file(tmp_path, "dup.json", '{"colliders": [{"type": "sphere", "center": [0, 0, 1], '
                                           '"radius": 0.2, "radius": 0.5}]}')
    results, _ = run_cli([["bake", "cloth", "--out", str(tmp_path / "o"), "--spec", spec, flag]])
    assert results[0]["rc"] == 2 and 'key "radius" appears twice' in results[0]["stderr"]
