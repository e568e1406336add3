"""benchmarks/compare_evals.py: two full evaluations compared row by row, the network alone and the
accelerated iteration counted apart (the shipping rule of issue #29)."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import compare_evals  # noqa: E402


def curve(level_at_50: float, n: int = 60) -> dict:
    # geometric decay from 1 to level_at_50 at iteration 50
    return {"curve": [level_at_50 ** (min(k, 50) / 50) for k in range(n)]}


def test_rows_counted_per_family_with_round_off_ties_and_missing_rows(tmp_path):
    base = {"laplace100": curve(1e-14), "laplace100_acc": curve(1e-32), "diff_ipt5": {"mean": 1e-8},
            "diff_ipt5_acc": {"mean": 1e-10}, "burg_acc": {"mean": 1.0, "mean_solvable": 1e-12}, "old": {"mean": 1}}
    cand = {"laplace100": curve(1e-30), "laplace100_acc": curve(1e-33), "diff_ipt5": {"mean": 1.5e-8},
            "diff_ipt5_acc": {"mean": 1e-9}, "burg_acc": {"mean": 1.0, "mean_solvable": float("nan")}}
    res = compare_evals.compare(base, cand, factor=2.0)
    by = {r["row"]: r for r in res["rows"]}
    assert by["laplace100"]["verdict"] == "better" and by["laplace100"]["dlog10"] == pytest.approx(-16, abs=1e-9)
    assert by["laplace100"]["cand_to1e-20"] < by["laplace100"]["base_to1e-20"] == float("inf")
    assert by["laplace100_acc"]["verdict"] == "same"          # both below the round-off floor
    assert by["diff_ipt5"]["verdict"] == "same"               # 1.5x: within the factor
    assert by["diff_ipt5_acc"]["verdict"] == "worse"
    assert by["burg_acc"]["verdict"] == "worse"               # NaN on the solvable steps is the worst case
    assert res["counts"]["alone"] == {**res["counts"]["alone"], "rows": 2, "better": 1, "worse": 0}
    acc = res["counts"]["accelerated"]
    assert (acc["rows"], acc["better"], acc["worse"], acc["worst_row"]) == (3, 0, 2, "burg_acc")
    assert res["missing"] == ["old"]
    b, c = tmp_path / "b" / "eval.json", tmp_path / "c" / "eval.json"
    for p, d in ((b, base), (c, cand)):
        p.parent.mkdir()
        p.write_text(json.dumps(d))
    out = tmp_path / "cmp.md"
    assert compare_evals.main([str(b), str(c), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| network alone (plain) | 2 | 1 | 0 |" in text and "Rows in only one file: old" in text
    assert json.loads(out.with_suffix(".json").read_text())["counts"]["accelerated"]["worse"] == 2


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    good = tmp_path / "e.json"
    good.write_text("{}")
    with pytest.raises(SystemExit):
        compare_evals.main([str(good), str(tmp_path / "none.json")])
    assert "cannot read the eval results" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_evals.main([str(good), str(good), "--factor", "1"])
