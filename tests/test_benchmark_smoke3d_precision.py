"""benchmarks/smoke3d_precision.py at a test's size: both precisions run the same plume, each against the
converged reference, and the table and json say what ran (issue #28)."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import smoke3d_precision as bench  # noqa: E402


def test_both_precisions_meet_the_reference_and_agree(tmp_path):
    out = tmp_path / "precision.md"
    assert bench.main(["--size", "16", "--frames", "3", "--out", str(out)]) == 0
    data = json.load(open(tmp_path / "precision.json"))
    assert data["size"] == 16 and data["reference_tol"] == 1e-13
    for name in ("float32", "bfloat16"):
        r = data["runs"][name]
        assert len(r["iterations"]) == 3 and r["capped_frames"] == 0 and r["forward_ms"] > 0
        assert 0 < r["density_vs_reference"] < 1e-3          # the target, over the run
        assert r["density_vs_other_precision"] < 1e-4
    text = out.read_text()
    assert "| float32" in text and "| bfloat16" in text and "(default here)" in text
