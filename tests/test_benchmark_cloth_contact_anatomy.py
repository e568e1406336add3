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
        assert 0 <= r["crawl_steps"] <= r["crawl_iterations"]
        if r["crawl_steps"]:   # each term's share of the crawl steps' model error, together the whole
            assert abs(sum(r["error_share"].values()) - 1.0) < 1e-9 and min(r["error_share"].values()) >= 0
    # without contact the residual tolerance leaves the frame well within 1e-3 edge lengths of its minimum
    assert all(r["stopped_to_continued"] < 1e-3 for r in rows if not r["contact"])
    text = out.read_text()
    assert "| drape | 16² | yes |" in text and "| drape | 16² | no |" in text and "| drape 16² | 6 |" in text


def _flat_problem(**stiffness):
    """A 6x7 cloth lying flat at its rest spacing (1), at rest, no gravity: x_new = x_old + a (dt = 1)."""
    from metaphys.physics.cloth import ClothProblem
    h, w = 6, 7
    x = torch.zeros(1, 3, h, w, dtype=torch.float64)
    x[0, 0] = torch.arange(h, dtype=torch.float64).view(h, 1)
    x[0, 1] = torch.arange(w, dtype=torch.float64).view(1, w)
    return ClothProblem(x, gravity=(0.0, 0.0, 0.0), rest=1.0, **stiffness), x


def test_a_linearized_rotation_fails_only_the_stretch_model():
    # the step turns every edge by theta to first order (x -> x + theta z^ x r): angles stay, lengths grow by
    # ~theta^2 / 2, which the quadratic model at rest does not see -- the crawl's signature
    problem, x = _flat_problem(k_stretch=1000.0, k_shear=10.0, k_bend=0.01)
    theta = 0.05
    a1 = torch.zeros_like(x)
    a1[0, 0] = -theta * (x[0, 1] - 3.0)
    a1[0, 1] = theta * (x[0, 0] - 2.5)
    err = anatomy.model_error_by_term(problem, torch.zeros_like(x), a1)
    missed = err["actual"] - err["predicted"]          # inertia's share of the change is predicted exactly
    assert missed > 0.3 * err["actual"] > 0
    assert err["stretch"] > 0.99 * missed
    assert abs(err["shear"]) + abs(err["bend"]) + abs(err["other"]) < 1e-6 * err["stretch"]
    assert 0.99 * 2.86 < anatomy.max_edge_rotation_deg(problem, torch.zeros_like(x), a1) < 2.87  # atan(0.05)


def test_model_errors_split_the_whole_error_and_vanish_for_a_quadratic_energy():
    torch.manual_seed(0)
    problem, x = _flat_problem(k_stretch=1000.0, k_shear=10.0, k_bend=0.01)
    a0, a1 = 0.05 * torch.randn_like(x), 0.05 * torch.randn_like(x)
    err = anatomy.model_error_by_term(problem, a0, a1)
    parts = sum(err[t] for t in list(anatomy.MODEL_TERMS) + ["other"])
    assert abs(parts - (err["actual"] - err["predicted"])) <= 1e-9 * abs(err["actual"])
    # inertia alone (every stiffness 0) is quadratic in a: its model is exact
    quad, _ = _flat_problem(k_stretch=0.0, k_shear=0.0, k_bend=0.0, k_pin=0.0, k_contact=0.0)
    e = anatomy.model_error_by_term(quad, a0, a1)
    assert abs(e["actual"] - e["predicted"]) <= 1e-12 * abs(e["actual"]) and e["actual"] != 0
