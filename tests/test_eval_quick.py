"""The 2-D quick score that picks training snapshots (metaphys/eval/quick.py): its network-alone guard
runs validation obstacle layouts disjoint from the held-out eval's, judges their mean and the worst one,
and can fail."""
import math

import pytest
import torch

from metaphys.eval import cases
from metaphys.eval.quick import (GUARD_LAYOUTS, evaluate_snapshot, guard_mean_regression, guard_regression, held_out,
                                 laplace_guard_case)
from metaphys.optim.weights import MetamizerNet


def test_guard_layouts_are_not_the_held_out_eval_cases():
    guard = held_out("laplace", GUARD_LAYOUTS, 64, k=1)
    score_pair = held_out("laplace", 2, 64)           # the score's own Laplace case (k = 0)
    evaluation = cases.laplace_random(64)             # metaphys eval / compare_weights
    for other in (score_pair, evaluation):
        a, b = guard.fields["bc"], other.fields["bc"]      # boundary values and obstacle layout
        assert not any(torch.equal(a[i], b[j]) for i in range(a.shape[0]) for j in range(b.shape[0]))


def test_guard_is_the_worst_layout_and_its_mean_and_separates_trained_from_untrained(shipped_optimizer):
    assert GUARD_LAYOUTS >= 32   # fewer: the worst layout is noise (layouts scatter by decades)
    trained = laplace_guard_case(shipped_optimizer.model, 64, n=8)
    assert len(trained["layouts"]) == 8 and trained["final"] == max(trained["layouts"])
    logs = [math.log10(v) for v in trained["layouts"]]
    assert abs(trained["mean_log10"] - sum(logs) / len(logs)) < 1e-9
    torch.manual_seed(0)
    untrained = laplace_guard_case(MetamizerNet(hidden=12).eval(), 64, n=8)
    # the untrained network leaves the residual where it started; the shipped one is many decades below
    assert untrained["diverged"] or math.log10(untrained["final"]) - math.log10(trained["final"]) > 10


def test_score_counts_the_guard_cases(shipped_optimizer, monkeypatch):
    from metaphys.eval import quick
    monkeypatch.setattr(quick, "GUARD_SIZES", (24, 40))   # the real sizes cost ~14 s here
    res = evaluate_snapshot(shipped_optimizer.model, sizes=(32,), iterations=20, rollouts=False)
    assert set(res["cases"]) == {"laplace32", "guard_laplace24", "guard_laplace40"}
    logs = [math.log10(max(1e-33, c["final"])) for c in res["cases"].values()]
    assert abs(res["score"] - sum(logs) / len(logs)) < 1e-12


def test_guard_regression_is_the_worst_guard_size_in_decades_above_converged():
    ref = {"guard_laplace64": {"final": 1e-15}, "guard_laplace100": {"final": 1e-10}, "laplace32": {"final": 1.0}}
    better = {"guard_laplace64": {"final": 1e-16}, "guard_laplace100": {"final": 1e-11}, "laplace32": {"final": 1e-30}}
    worse = {"guard_laplace64": {"final": 1e-32}, "guard_laplace100": {"final": 1e-7}, "laplace32": {"final": 1e-30}}
    assert abs(guard_regression(better, ref) - (-1.0)) < 1e-9
    assert abs(guard_regression(worse, ref) - 3.0) < 1e-9
    # below GUARD_CONVERGED (1e-20) a worst layout is converged: 1e-25 against 1e-32 is no regression
    floor = {"guard_laplace64": {"final": 1e-32}}
    assert guard_regression({"guard_laplace64": {"final": 1e-25}}, floor) == 0.0
    assert abs(guard_regression({"guard_laplace64": {"final": 1e-18}}, floor) - 2.0) < 1e-9
    assert guard_regression({"guard_laplace64": {"final": float("inf"), "diverged": True}}, ref) == math.inf


def test_guard_mean_regression_is_the_worst_guard_size_of_the_layout_means():
    ref = {"guard_laplace64": {"final": 1e-30, "mean_log10": -31.0}, "guard_laplace100": {"final": 1e-10, "mean_log10": -15.0}}
    cand = {"guard_laplace64": {"final": 1e-29, "mean_log10": -31.5}, "guard_laplace100": {"final": 1e-6, "mean_log10": -14.2}}
    assert abs(guard_mean_regression(cand, ref) - 0.8) < 1e-9      # 100^2: -14.2 vs -15.0
    assert abs(guard_regression(cand, ref) - 4.0) < 1e-9           # its worst layout: 1e-6 vs 1e-10
    assert guard_mean_regression({"guard_laplace64": {"final": math.inf, "mean_log10": math.inf, "diverged": True}},
                                 ref) == math.inf
    old = {"guard_laplace64": {"final": 1e-30}}                    # a record from before the mean
    assert guard_mean_regression(cand, old) == -math.inf


def test_judge_refuses_a_better_score_whose_network_alone_regressed(tmp_path, monkeypatch):
    """Snapshots with the best mean scores but a network alone worse than the reference weights' -- on the
    guard layouts' mean (by more than GUARD_MEAN_DEX) or on the worst layout (by more than GUARD_WORST_DEX)
    -- are recorded and never become best.pt; one within both does."""
    import json
    import types

    from metaphys.train import select

    # (mean score, the 100^2 guard's mean log10 MSR, its worst layout)
    scores = iter([(-20.0, -13.5, 1e-9), (-19.0, -15.2, 1e-6), (-18.0, -14.7, 1e-8)])

    def fake_evaluate(model, sizes, iterations):
        score, mean, worst = next(scores)
        return {"score": score, "cases": {"guard_laplace100": {"final": worst, "mean_log10": mean, "diverged": False}}}

    monkeypatch.setattr(select, "evaluate_snapshot", fake_evaluate)
    monkeypatch.setattr(select, "model_from_snapshot", lambda path: None)
    monkeypatch.setattr(select.SnapshotJudge, "reference_guard",
                        lambda self: {"guard_laplace100": {"final": 1e-10, "mean_log10": -15.0, "diverged": False}})
    cfg = types.SimpleNamespace(dims=2, eval_sizes=(32,), eval_iterations=10)
    judge = select.SnapshotJudge(cfg, str(tmp_path))
    trainer = types.SimpleNamespace(step=1, elapsed=0.0)
    for name in ("a.pt", "b.pt", "c.pt"):
        (tmp_path / name).write_bytes(name.encode())
    mean_worse = judge(str(tmp_path / "a.pt"), trainer)          # mean +1.5 decades, worst +1
    assert mean_worse["guard_passed"] is False and "best" not in mean_worse and not (tmp_path / "best.pt").exists()
    tail_worse = judge(str(tmp_path / "b.pt"), trainer)          # mean better, worst layout +4 decades
    assert tail_worse["guard_passed"] is False and "best" not in tail_worse and not (tmp_path / "best.pt").exists()
    within = judge(str(tmp_path / "c.pt"), trainer)              # mean +0.3, worst +2: within both
    assert within["guard_passed"] is True and within["best"] is True
    assert (tmp_path / "best.pt").read_bytes() == b"c.pt"
    records = [json.loads(line) for line in (tmp_path / "snapshots.jsonl").read_text().splitlines()]
    assert [r["guard_mean_regression_dex"] for r in records] == pytest.approx([1.5, -0.2, 0.3])
    assert [r["guard_regression_dex"] for r in records] == pytest.approx([1.0, 4.0, 2.0])
    # a resumed run's judge starts from the best eligible score, not the refused snapshots' better ones
    assert select.SnapshotJudge(cfg, str(tmp_path)).best_score == -18.0


def test_the_3d_gate_refuses_a_snapshot_that_stalls_in_the_product_smoke(tmp_path, monkeypatch):
    """3-D snapshots (quick3d-v3) become best only where the product's smoke needs at most 1.1x the
    shipped weights' fluid iterations, no more steps at the cap and ends them no more than 1.5x higher (issue #28: the 3-D run's final EMA beat
    the shipped weights on the score and stalled at the cap in the smoke)."""
    import types

    from metaphys.eval import quick
    from metaphys.train import select

    reference = {"diverged": False, "iterations": 200, "capped": 0, "final": 9e-11, "worst": 1e-10}
    assert quick.smoke_guard_passed(dict(reference, iterations=220), reference)
    assert not quick.smoke_guard_passed(dict(reference, iterations=221), reference)
    assert not quick.smoke_guard_passed(dict(reference, iterations=150, capped=1), reference)
    assert not quick.smoke_guard_passed({"diverged": True, "final": float("inf")}, reference)
    # where steps end at the cap the count says little: the worst end MSR decides (64^3)
    capped = dict(reference, capped=1, worst=6.5e-10)
    assert quick.smoke_guard_passed(dict(capped, worst=9e-10), capped)
    assert not quick.smoke_guard_passed(dict(capped, worst=1.3e-9), capped)

    cases = iter([(-21.0, dict(reference, iterations=400, capped=6)),   # better score, stalls: refused
                  (-19.0, dict(reference, iterations=180))])           # worse score, passes: best
    asked = []

    def fake_evaluate3d(model, sizes, iterations, smoke):
        asked.append(smoke)
        score, smoke_case = next(cases)
        return {"score": score, "cases": {"smoke3d_guard": smoke_case}}

    monkeypatch.setattr(select, "evaluate_snapshot3d", fake_evaluate3d)
    monkeypatch.setattr(select, "model_from_snapshot", lambda path: None)
    monkeypatch.setattr(select.SnapshotJudge, "reference_guard", lambda self: {"smoke3d_guard": reference})
    cfg = types.SimpleNamespace(dims=3, eval_sizes=(16,), eval_iterations=10)
    judge = select.SnapshotJudge(cfg, str(tmp_path))
    assert judge.scheme == "quick3d-v3" and judge.reference_weights.endswith("metamizer3d.pt")
    trainer = types.SimpleNamespace(step=1, elapsed=0.0)
    for name in ("a.pt", "b.pt"):
        (tmp_path / name).write_bytes(name.encode())
    stalled = judge(str(tmp_path / "a.pt"), trainer)
    assert stalled["guard_passed"] is False and "best" not in stalled and not (tmp_path / "best.pt").exists()
    fine = judge(str(tmp_path / "b.pt"), trainer)
    assert fine["guard_passed"] is True and fine["best"] is True and (tmp_path / "best.pt").read_bytes() == b"b.pt"
    assert asked == [True, True]


def test_the_smoke_case_runs_the_product_smoke(monkeypatch):
    """smoke3d_case at a test's size: the shipped 3-D weights take every fluid step to the tolerance."""
    from metaphys.eval import quick
    from metaphys.optim.weights import DEFAULT_WEIGHTS_3D, load_torchscript
    case = quick.smoke3d_case(load_torchscript(DEFAULT_WEIGHTS_3D), size=16, frames=3)
    assert not case["diverged"] and case["capped"] == 0 and case["iterations"] > 0
    assert case["worst"] <= 1e-10 and 0 < case["final"] <= case["worst"] and case["size"] == 16
