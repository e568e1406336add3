"""benchmarks/cloth_scenes.py runs end to end on tiny scenes, and its checks see what they claim."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cloth_scenes_benchmark_tiny(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cloth_scenes.py"), "--size", "16",
                        "--frames", "4", "--scenes", "cape", "slope_mu0", "slope_mu0.7", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["scene"]: row for row in json.load(open(tmp_path / "cloth_scenes.json"))}
    assert rows["cape"]["converged"] == 4 and rows["cape"]["deepest_inside_mm"] <= rows["cape"]["margin_mm"]
    assert rows["slope_mu0"]["slide_m"] < rows["slope_mu0.7"]["slide_m"] - 0.03   # friction holds it
    assert "| cape | " in open(tmp_path / "cloth_scenes.md").read()
