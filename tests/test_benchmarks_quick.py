"""The peer benchmarks run end to end in --quick mode (tiny sizes) and print their tables.

Weights: the shipped weights/metamizer.pt when present, else an untrained network exported to a
temporary folder (the scripts must then report non-convergence, not crash).
"""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "weights", "metamizer.pt")

SCRIPTS = {
    "laplace.py": ["## Headline: time to MSR 1e-20", "| problem | Metamizer variant |"],
    "nonlinear.py": ["## Summary", "| problem | method |"],
    "table1.py": ["## Table 1", "| row | 1 it/step |"],
    "metamizer_place.py": ["## Costs per size", "| grid | unknowns |", "## Verdict"],
    "profile_iteration.py": ["## Time per iteration, before/after", "## Time to MSR 1e-20", "| method | iterations |",
                             "## Part 4: the 3-D network"],
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    if os.path.exists(SHIPPED) and os.path.exists(os.path.splitext(SHIPPED)[0] + ".json"):
        return SHIPPED
    from metaphys.optim.metamizer import MetamizerNet
    from metaphys.optim.weights import export_torchscript
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("weights") / "metamizer.pt")
    export_torchscript(MetamizerNet(hidden=8).eval(), path, {"training": {"step": 0, "source": "untrained"}})
    return path


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_quick_run(script, weights, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick", "--weights", weights,
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for marker in SCRIPTS[script]:
        assert marker in proc.stdout, (marker, proc.stdout[-3000:])
    assert "|---|" in proc.stdout
    md = os.path.join(str(tmp_path), script.replace("_iteration", "").replace(".py", ".md"))
    assert os.path.exists(md), os.listdir(str(tmp_path))
    text = open(md).read()
    assert "Background load" in text and "sha256" in text
    if script in ("laplace.py", "nonlinear.py"):
        assert any(f.endswith(".png") for f in os.listdir(str(tmp_path)))


def test_compare_weights_quick_run_is_deterministic(weights, tmp_path):
    """The candidate screen runs end to end; the same weights twice give the same numbers, so a
    candidate's 'better on k of n' is a property of the weights, not of the run."""
    import json
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "compare_weights.py"), "--quick",
                           "--weights", weights, "--out", str(tmp_path), weights, "--large", "48",
                           "--large-iterations", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "## Summary" in proc.stdout and "|---|" in proc.stdout
    data = json.load(open(tmp_path / "compare_weights.json"))
    (label, s), = data["summaries"].items()
    assert s["accelerated"]["better"] == 0 and s["accelerated"]["mean_dlog10"] == 0.0
    assert s["plain"]["cases"] == 8 and s["plain"]["mean_dlog10"] == 0.0
    a, b = data["results"].values()
    assert a["plain"] == b["plain"] and a["large"]["final"] == b["large"]["final"]
    report = open(tmp_path / "compare_weights.md").read()
    assert "Background load" in report
    # each column names its file's sha256: a path like weights/metamizer.pt changes meaning when weights ship
    from metaphys.optim.weights import sha256_of
    assert a["sha256"] == b["sha256"] == sha256_of(weights) and sha256_of(weights)[:16] in report
