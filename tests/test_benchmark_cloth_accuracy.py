"""benchmarks/cloth_accuracy.py runs end to end on a tiny scene, and the product's default cloth
lands on the converged reference (the finishing stage), while the Metamizer alone does not."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cloth_accuracy_benchmark_tiny(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cloth_accuracy.py"), "--sizes", "16",
                        "--frames", "3", "--scenes", "curtain", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["method"]: row for row in json.load(open(tmp_path / "cloth_accuracy.json"))
            if not row["method"].startswith("Blender")}  # Blender rows appear where bpy is installed
    assert set(rows) == {"reference", "newton_1e-8", "previous_default", "difference_hessian", "default", "metamizer"}
    assert rows["default"]["converged"] == 3 and rows["default"]["final_err_pct"] < 1e-3
    # the same solver on difference Hessian-vector products lands on the same answer
    assert rows["difference_hessian"]["converged"] == 3 and rows["difference_hessian"]["final_err_pct"] < 1e-3
    assert rows["default"]["budget_hit"] == 0 and rows["default"]["ms_max"] >= rows["default"]["ms"]
    assert abs(rows["default"]["step_energy"]) < 1e-6   # the same minimum as the reference (no contact)
    # every default step within the 1e-3 edge lengths of its stop (step_tol), the Metamizer alone far off
    assert rows["default"]["step_err"] <= 1e-3
    assert rows["metamizer"]["step_err"] > 5 * rows["default"]["step_err"]
    assert rows["metamizer"]["final_err_pct"] > 5 * rows["default"]["final_err_pct"]
    table = open(tmp_path / "cloth_accuracy.md").read()
    assert "| curtain | 16² | default |" in table
