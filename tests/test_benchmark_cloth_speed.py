"""benchmarks/cloth_speed.py runs end to end on a tiny scene and writes its table."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cloth_speed_benchmark_tiny(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cloth_speed.py"), "--sizes", "16",
                        "--frames", "2", "--scenes", "curtain", "--no-blender", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.load(open(tmp_path / "cloth_speed.json"))
    # at 16^2 the sims pick one thread; the other row runs the default on two
    assert {row["method"]: row["threads"] for row in rows} == {"default": 1, "default_2_threads": 2}
    for row in rows:
        assert row["converged"] == 2 and row["ms_max"] >= row["ms"] > 0 and row["cpu_ms"] > 0 and row["its"] >= 1
    table = open(tmp_path / "cloth_speed.md").read()
    assert "| curtain | 16² | default |" in table and "not timed in this run" in table
