"""`metaphys eval`: case selection and the plain / accelerated rows (quick sizes)."""
import pytest

from metaphys.eval.harness import TARGETS, run_eval


def test_only_selects_by_family_or_exact_size(shipped_optimizer):
    res = run_eval(shipped_optimizer.model, quick=True, only=["laplace32"], log=lambda *_: None)
    assert set(res) == {"laplace32", "laplace32_acc"}
    # the product's accelerated iteration is never worse at the end than the plain one here
    assert res["laplace32_acc"]["curve"][-1] <= res["laplace32"]["curve"][-1] * 10
    # a size prefix does not select larger sizes ("laplace100" is not "laplace1000")
    assert run_eval(shipped_optimizer.model, quick=True, only=["laplace3"], log=lambda *_: None) == {}


@pytest.mark.parametrize("name", ["wave_c2.0_ipt100", "burgers_mu0.3_ipt5", "fluid_Re32_ipt20"])
def test_every_target_has_an_accelerated_twin(name):
    names = {t[0] for t in TARGETS}
    assert name in names and name + "_acc" in names


def test_iteration_budget_targets_are_judged_on_the_iteration_reached(tmp_path):
    """Laplace 400²/1000² targets are budgets (≤ 1e-20 by iteration 150 / 300): judged on the
    first iteration below 1e-20, not on the value at a nearby checkpoint; the JSON beside the
    report keeps every number."""
    import json
    from metaphys.eval.harness import write_report

    def run(to20, n=300):
        return {"curve": [1.0] * (n + 1), "to20": to20, "it_per_s": 1.0, "it200": 1e-19}
    results = {"laplace1000": run(None), "laplace1000_acc": run(210), "laplace400_acc": run(151)}
    lines = write_report(results, str(tmp_path / "eval.md"), "test weights", 1.0)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if "by iteration" in line}
    assert "PASS" in rows["Laplace 1000², MSR ≤ 1e-20 by iteration 300, accelerated"]
    assert "iteration 210" in rows["Laplace 1000², MSR ≤ 1e-20 by iteration 300, accelerated"]
    assert "MISS (not reached in 300 iterations)" in rows["Laplace 1000², MSR ≤ 1e-20 by iteration 300"]
    assert "MISS (iteration 151)" in rows["Laplace 400², MSR ≤ 1e-20 by iteration 150, accelerated"]
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["laplace1000_acc"]["to20"] == 210 and len(saved["laplace1000_acc"]["curve"]) == 301


def test_fluid_rows_include_the_forward_smoke_runs(shipped_optimizer):
    """SmokeSim runs the frozen fast module (optim/fast.py), whose steps equal the TorchScript
    module's to ~1e-6: the eval measures the fluid rows with both, and the Navier-Stokes target
    is judged on the smoke one too."""
    res = run_eval(shipped_optimizer.model, quick=True, only=["fluid"], log=lambda *_: None)
    module_rows = {k for k in res if k.endswith("_acc")}
    assert module_rows and {k + "_smoke" for k in module_rows} <= set(res)
    for k in module_rows:
        a, b = res[k], res[k + "_smoke"]
        assert "diverged" not in a and "diverged" not in b
        # the same iteration up to float32 rounding: equal within a factor, not bit for bit
        for x, y in zip(a["L_d"], b["L_d"]):
            assert 0.2 < (y + 1e-30) / (x + 1e-30) < 5.0
    assert "fluid_Re32_ipt20_acc_smoke" in {t[0] for t in TARGETS}


def test_out_is_checked_before_the_evaluation_and_a_folder_gets_eval_md(tmp_path):
    """`--out DIR` once ran an hour of evaluation and then failed writing the report onto the folder:
    where the report goes is settled (or refused, naming the argument) before anything runs."""
    import os
    from metaphys.eval.harness import EvalInputError, report_path
    assert report_path(str(tmp_path)) == os.path.join(str(tmp_path), "eval.md")
    assert report_path(str(tmp_path / "new") + os.sep) == os.path.join(str(tmp_path / "new"), "eval.md")
    assert report_path(str(tmp_path / "a" / "b.md")) == str(tmp_path / "a" / "b.md") and (tmp_path / "a").is_dir()
    with pytest.raises(EvalInputError, match="ending in .md"):
        report_path(str(tmp_path / "report.txt"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EvalInputError, match="cannot create its folder"):
        report_path(str(blocker / "eval.md"))


def test_partial_runs_merge_into_one_report_and_a_repeated_case_is_refused(tmp_path, shipped_optimizer):
    """One run per core with --only, then `--merge`: the report of the merged results has every part's
    rows, in the parts' order; a case present in two parts, or a file that is not a report's json, is an error."""
    import json
    from types import SimpleNamespace
    from metaphys.eval.harness import EvalInputError, main, merge_parts
    from metaphys.optim.weights import default_weights_path
    a = run_eval(shipped_optimizer.model, quick=True, only=["laplace32"], log=lambda *_: None)
    b = {"wave_c1.0_ipt5": {"mean": 1e-9, "it_per_s": 10.0, "per_step": [1e-9]}}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert list(merge_parts([str(tmp_path / "a.json"), str(tmp_path / "b.json")])) == list(a) + list(b)
    with pytest.raises(EvalInputError, match="repeats cases"):
        merge_parts([str(tmp_path / "a.json"), str(tmp_path / "a.json")])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(EvalInputError, match="not the .json"):
        merge_parts([str(tmp_path / "bad.json")])
    args = SimpleNamespace(weights=default_weights_path(), out=str(tmp_path / "out") + "/", quick=False, only=None,
                           merge=[str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert main(args) == 0
    text = (tmp_path / "out" / "eval.md").read_text()
    assert "| laplace32 |" in text and "| wave_c1.0_ipt5 |" in text and "merged from 2 partial runs" in text
    assert json.loads((tmp_path / "out" / "eval.json").read_text()).keys() == {**a, **b}.keys()


def test_the_cli_refuses_a_bad_out_at_once_without_a_traceback(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "metaphys", "eval", "--quick", "--out", str(tmp_path / "r.txt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "ending in .md" in r.stderr
    assert not any(tmp_path.iterdir())
    r = subprocess.run([sys.executable, "-m", "metaphys", "eval", "--quick", "--weights", str(tmp_path / "none.pt"),
                        "--out", str(tmp_path / "e.md")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such file" in r.stderr
