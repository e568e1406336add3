"""benchmarks/cloth_long_run.py: a long bake with every frame checked (issue #24's 200-frame curtain),
here at its quick size; a frame that fails a check is named and fails the run."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import cloth_long_run  # noqa: E402


def test_the_quick_long_run_checks_every_frame_and_writes_its_table(tmp_path):
    out = tmp_path / "long.md"
    assert cloth_long_run.main(["--quick", "--out", str(out)]) == 0
    data = json.load(open(tmp_path / "long.json"))
    run, summary = data["run"], data["summary"]
    assert run["frames"] == 24 and len(run["wall_ms"]) == 24 and summary["within"] == 24 and not run["failed"]
    assert 0 < summary["strain_min"] <= summary["strain_max"] < cloth_long_run.STRAIN_LIMIT
    text = out.read_text()
    assert "| metaphys default | 24/24 |" in text and "Frames that failed a check: none." in text


def test_a_frame_that_fails_a_check_is_named_and_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(cloth_long_run, "STRAIN_LIMIT", 1e-9)   # every frame's strain is above it
    out = tmp_path / "long.md"
    assert cloth_long_run.main(["--quick", "--out", str(out)]) == 1
    text = out.read_text()
    assert "| metaphys default | 0/24 |" in text and "1 (strain " in text
