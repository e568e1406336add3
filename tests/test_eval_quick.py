"""The 2-D quick score that picks training snapshots (metaphys/eval/quick.py): its network-alone guard
runs validation obstacle layouts disjoint from the held-out eval's, judges the worst one, and can fail."""
import math

import pytest
import torch

from metaphys.eval import cases
from metaphys.eval.quick import GUARD_LAYOUTS, evaluate_snapshot, guard_regression, held_out, laplace_guard_case
from metaphys.optim.weights import MetamizerNet


def test_guard_layouts_are_not_the_held_out_eval_cases():
    guard = held_out("laplace", GUARD_LAYOUTS, 64, k=1)
    score_pair = held_out("laplace", 2, 64)           # the score's own Laplace case (k = 0)
    evaluation = cases.laplace_random(64)             # metaphys eval / compare_weights
    for other in (score_pair, evaluation):
        a, b = guard.fields["bc"], other.fields["bc"]      # boundary values and obstacle layout
        assert not any(torch.equal(a[i], b[j]) for i in range(a.shape[0]) for j in range(b.shape[0]))


def test_guard_is_the_worst_layout_and_separates_trained_from_untrained(shipped_optimizer):
    trained = laplace_guard_case(shipped_optimizer.model, 64)
    assert len(trained["layouts"]) == GUARD_LAYOUTS and trained["final"] == max(trained["layouts"])
    torch.manual_seed(0)
    untrained = laplace_guard_case(MetamizerNet(hidden=12).eval(), 64)
    # the untrained network leaves the residual where it started; the shipped one is many decades below
    assert untrained["diverged"] or math.log10(untrained["final"]) - math.log10(trained["final"]) > 10


def test_score_counts_the_guard_cases(shipped_optimizer, monkeypatch):
    from metaphys.eval import quick
    monkeypatch.setattr(quick, "GUARD_SIZES", (24, 40))   # the real sizes cost ~14 s here
    res = evaluate_snapshot(shipped_optimizer.model, sizes=(32,), iterations=20, rollouts=False)
    assert set(res["cases"]) == {"laplace32", "guard_laplace24", "guard_laplace40"}
    logs = [math.log10(max(1e-33, c["final"])) for c in res["cases"].values()]
    assert abs(res["score"] - sum(logs) / len(logs)) < 1e-12


def test_guard_regression_is_the_worst_guard_size_in_decades():
    ref = {"guard_laplace64": {"final": 1e-30}, "guard_laplace100": {"final": 1e-10}, "laplace32": {"final": 1.0}}
    better = {"guard_laplace64": {"final": 1e-31}, "guard_laplace100": {"final": 1e-11}, "laplace32": {"final": 1e-30}}
    worse = {"guard_laplace64": {"final": 1e-32}, "guard_laplace100": {"final": 1e-7}, "laplace32": {"final": 1e-30}}
    assert abs(guard_regression(better, ref) - (-1.0)) < 1e-9
    assert abs(guard_regression(worse, ref) - 3.0) < 1e-9
    assert guard_regression({"guard_laplace64": {"final": float("inf"), "diverged": True}}, ref) == math.inf


def test_judge_refuses_a_better_score_whose_network_alone_regressed(tmp_path, monkeypatch):
    """A snapshot with the best mean score but a guard 3 decades worse than the reference weights' is
    recorded and never becomes best.pt; one within the scatter does."""
    import json
    import types

    from metaphys.train import select

    scores = iter([(-20.0, 1e-7), (-18.0, 1e-10)])   # (mean score, its 100^2 guard)

    def fake_evaluate(model, sizes, iterations):
        score, guard = next(scores)
        return {"score": score, "cases": {"guard_laplace100": {"final": guard, "diverged": False}}}

    monkeypatch.setattr(select, "evaluate_snapshot", fake_evaluate)
    monkeypatch.setattr(select, "model_from_snapshot", lambda path: None)
    monkeypatch.setattr(select.SnapshotJudge, "reference_guard",
                        lambda self: {"guard_laplace100": {"final": 1e-10, "diverged": False}})
    cfg = types.SimpleNamespace(dims=2, eval_sizes=(32,), eval_iterations=10)
    judge = select.SnapshotJudge(cfg, str(tmp_path))
    trainer = types.SimpleNamespace(step=1, elapsed=0.0)
    for name in ("a.pt", "b.pt"):
        (tmp_path / name).write_bytes(name.encode())
    first = judge(str(tmp_path / "a.pt"), trainer)
    assert first["guard_passed"] is False and "best" not in first and not (tmp_path / "best.pt").exists()
    second = judge(str(tmp_path / "b.pt"), trainer)
    assert second["guard_passed"] is True and second["best"] is True
    assert (tmp_path / "best.pt").read_bytes() == b"b.pt"
    records = [json.loads(line) for line in (tmp_path / "snapshots.jsonl").read_text().splitlines()]
    assert [r["guard_regression_dex"] for r in records] == pytest.approx([3.0, 0.0])
    # a resumed run's judge starts from the best eligible score, not the refused snapshot's better one
    assert select.SnapshotJudge(cfg, str(tmp_path)).best_score == -18.0
