"""benchmarks/cloth_scenes.py runs end to end on tiny scenes, and its checks see what they claim."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cloth_scenes_benchmark_tiny(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cloth_scenes.py"), "--size", "16",
                        "--frames", "4", "--scenes", "cape", "slope_mu0", "slope_mu0.7", "fold", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["scene"]: row for row in json.load(open(tmp_path / "cloth_scenes.json"))}
    assert rows["cape"]["converged"] == 4 and rows["cape"]["deepest_inside_mm"] <= rows["cape"]["margin_mm"]
    assert rows["slope_mu0"]["slide_m"] < rows["slope_mu0.7"]["slide_m"] - 0.03   # friction holds it
    md = open(tmp_path / "cloth_scenes.md").read()
    assert "| cape | " in md
    # self-collision's cost: each scene with it on is run again with it off, in the same loop
    assert rows["cape:no_self"]["frames"] == 4 and rows["fold:no_self"]["converged"] == 4
    assert "slope_mu0:no_self" not in rows and "| fold | " in md.split("## Self-collision's cost")[1]
    # the fold's converged reference: its strain and the per-frame distance to it
    assert rows["fold:reference"]["converged"] == 4
    assert rows["fold"]["ref_max_strain"] == rows["fold:reference"]["max_strain"]
    assert len(rows["fold"]["ref_distance_cm"]) == 4
