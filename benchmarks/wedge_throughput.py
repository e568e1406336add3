"""Throughput of `metaphys wedge` on a local 2-worker Ray instance vs two bakes run by hand side by side.

The same total work three ways, each from a cold start (fresh processes):
  wedge     `metaphys wedge W.json --workers 2`: 16 variants, Ray places them on its 2 CPUs (Ray's start-up,
            the workers' torch import and weights self-test included);
  by hand   two shells side by side, each running `metaphys bake` for 8 of the variants one after
            another (every bake pays the process start: Python, torch, weights self-test);
  2 loops   two Python processes side by side, each baking 8 variants in-process (`metaphys.cli.main`),
            so only the bakes themselves: the strictest baseline.
Every variant uses 1 torch thread. The wedge's variant folders are compared with the by-hand bakes of
the same specs: every file but manifest.json and .state/ must be byte-identical (VDB files are off:
OpenVDB's header holds a random UUID).

    python benchmarks/wedge_throughput.py [--size 32] [--frames 12] [--iterations 10] [--variants 16]
writes benchmarks/results/wedge_throughput.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "wedge_throughput.md")
ENV = dict(os.environ, OMP_NUM_THREADS="1")

LOOP = """
import sys
from metaphys.cli import main
codes = [main(["bake", "smoke", "--spec", s, "--out", o, "--progress", "none", "--threads", "1"])
         for s, o in zip(sys.argv[1::2], sys.argv[2::2])]
sys.exit(max(codes))
"""


def wedge_file(folder: str, variants: int, size: int, frames: int, iterations: int) -> str:
    path = os.path.join(folder, "wedge.json")
    half = variants // 2
    with open(path, "w") as fh:
        json.dump({"kind": "smoke", "description": "benchmarks/wedge_throughput.py",
                   "base": {"resolution": [size, size], "frames": frames, "iterations_per_step": iterations,
                            "vdb": False},
                   "parameters": {"buoyancy": {"linspace": [1.0, 8.0, half]},
                                  "emitter_heat": [0.0, 2.0]}}, fh)
    return path


def shell_stream(pairs) -> str:
    """One terminal's worth of bakes, one after another."""
    return " && ".join(f"{sys.executable} -m metaphys bake smoke --spec '{s}' --out '{o}' --progress none "
                       f"--threads 1 > /dev/null" for s, o in pairs)


def side_by_side(commands) -> float:
    t = time.time()
    procs = [subprocess.Popen(c, cwd=ROOT, env=ENV, shell=isinstance(c, str)) for c in commands]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a baseline bake failed: exit codes {codes}")
    return time.time() - t


def same_files(a: str, b: str) -> bool:
    def files(folder):
        return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
                      if not os.path.relpath(d, folder).startswith(".state") and f != "manifest.json")
    if files(a) != files(b):
        return False
    return all(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read() for f in files(a))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--variants", type=int, default=16)
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="wedge_bench_")
    wedge = wedge_file(tmp, args.variants, args.size, args.frames, args.iterations)
    load0 = os.getloadavg()

    t = time.time()
    r = subprocess.run([sys.executable, "-m", "metaphys", "wedge", wedge, "--out", os.path.join(tmp, "wedge"),
                        "--workers", "2", "--progress", "none"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    t_wedge = time.time() - t
    if r.returncode:
        raise SystemExit(f"the wedge failed ({r.returncode}): {r.stderr[-2000:]}")
    m = json.load(open(os.path.join(tmp, "wedge", "wedge.json")))
    names = [v["name"] for v in m["variants"]]
    specs = [os.path.join(tmp, "wedge", v["spec_file"]) for v in m["variants"]]
    bake_s = sum(v["wall_s"] for v in m["variants"])

    hand = [[(s, os.path.join(tmp, "hand", n)) for s, n in zip(specs[k::2], names[k::2])] for k in (0, 1)]
    t_hand = side_by_side([shell_stream(h) for h in hand])
    loops = [[x for s, n in zip(specs[k::2], names[k::2]) for x in (s, os.path.join(tmp, "loop", n))] for k in (0, 1)]
    t_loop = side_by_side([[sys.executable, "-c", LOOP, *loop] for loop in loops])
    load1 = os.getloadavg()

    identical = sum(same_files(os.path.join(tmp, "wedge", n), os.path.join(tmp, "hand", n)) for n in names)
    rows = [("wedge (local Ray, --workers 2)", t_wedge), ("by hand: 2 shells of `metaphys bake`", t_hand),
            ("2 in-process loops (bakes only)", t_loop)]
    lines = [
        "# `metaphys wedge` throughput: local 2-worker Ray vs two bakes by hand side by side",
        "",
        f"Written by `benchmarks/wedge_throughput.py` on {time.strftime('%Y-%m-%d')}: {len(names)} smoke variants "
        f"({args.size}^2 cells, {args.frames} frames, {args.iterations} iterations per step, 1 torch thread each; "
        f"buoyancy x emitter_heat), Ray {m['settings']['ray']}, {platform.machine()} with {os.cpu_count()} cores, "
        f"Python {platform.python_version()}.",
        "",
        f"**The machine was busy**: a niced background training job (`metaphys train`) and other engineers' tests "
        f"shared the 2 cores (load average {load0[0]:.1f} before, {load1[0]:.1f} after), so each number is one "
        "noisy run, not a settled measurement.",
        "",
        "| run | wall s | variants / min | this wall / wedge wall |",
        "|---|---:|---:|---:|",
    ]
    for name, wall in rows:
        lines.append(f"| {name} | {wall:.1f} | {60 * len(names) / wall:.1f} | {wall / t_wedge:.2f} |")
    lines += [
        "",
        f"Throughput ratio wedge / by hand = {t_hand / t_wedge:.2f} (>= 0.90 meets the issue's target); "
        f"wedge / in-process loops = {t_loop / t_wedge:.2f}.",
        f"The wedge's wall time includes starting Ray and its workers; the variants' bakes took {bake_s:.1f} s "
        f"of task time in all (sum of `wall_s` in wedge.json).",
        f"Byte-identical to the by-hand bake of the same spec (every file but manifest.json and .state/): "
        f"{identical} of {len(names)} variants.",
        "Notes: \"by hand\" pays a process start per bake (Python, torch, the weights' self-test); a Ray worker "
        "pays it once and bakes its next variants in-process.",
        "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines))
    print("\n".join(lines))
    return 0 if identical == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
