"""benchmarks/cloth_contact_anatomy.py: the per-frame anatomy of Newton's work (issue #24), at its quick
size; and the residual-share measure on gradients whose answer is known."""
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import cloth_contact_anatomy as anatomy  # noqa: E402


def test_residual_shares_count_the_vertices_that_hold_the_gradient():
    g = torch.zeros(1, 3, 10, 10, dtype=torch.float64)
    g[0, 1, 4, 5] = 3.0                      # one vertex holds everything: 1 % of 100 vertices
    assert anatomy.residual_shares(g) == (1.0, 1.0)
    g = torch.ones(1, 3, 10, 10, dtype=torch.float64)   # spread evenly: 90 % and 99 % of the vertices
    s90, s99 = anatomy.residual_shares(g)
    assert abs(s90 - 90.0) <= 1.0 and abs(s99 - 99.0) <= 1.0


def test_the_quick_anatomy_writes_every_frame_and_frames_without_contact_stop_at_their_minimum(tmp_path):
    out = tmp_path / "anatomy.md"
    assert anatomy.main(["--quick", "--out", str(out)]) == 0
    data = json.load(open(tmp_path / "anatomy.json"))
    rows = data["rows"]
    assert [r["frame"] for r in rows] == list(range(1, 7)) and all(r["converged"] for r in rows)
    assert any(r["contact"] for r in rows) and not rows[0]["contact"]   # the drape lands on its sphere
    for r in rows:
        assert 0.0 < r["share90_median_pct"] <= r["share99_median_pct"] <= 100.0
        assert r["start_to_answer_max"] >= r["start_to_answer_rms"] >= 0.0
        assert r["newton_iterations"] >= 1 and 0 <= r["crawl_iterations"] <= r["newton_iterations"]
    # without contact the residual tolerance leaves the frame well within 1e-3 edge lengths of its minimum
    assert all(r["stopped_to_continued"] < 1e-3 for r in rows if not r["contact"])
    text = out.read_text()
    assert "| drape | 16² | yes |" in text and "| drape | 16² | no |" in text and "| drape 16² | 6 |" in text
