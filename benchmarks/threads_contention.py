"""Two threads beside another job: OpenMP's wait policy decides whether a second thread helps or ruins.

The sims choose two torch threads from 97² cells on (``sims.common.threads_for_grid``). OpenMP threads
that wait for work spin before they sleep (libgomp: 300,000 spins by default); when another process
holds one of the two cores, the spinning thread takes the time slices its partner needs and every
parallel region waits for the descheduled one. metaphys sets ``GOMP_SPINCOUNT=3000`` when it is imported
before torch and the user chose no policy (``metaphys/__init__.py``). This benchmark times, in fresh
processes that import metaphys first (as the CLI and the add-on's bakes do):

* the default 2-D smoke plume at 128² (frames 3-6) and the cloth curtain at 128² (frames 2-4), and the
  curtain at 64², 48², 32² (frames 3-12; one thread and metaphys's default two only: where the sims' rule
  picks between one thread and two),
* one thread; two threads with libgomp's default spinning (``GOMP_SPINCOUNT=300000``), with 1,000 spins,
  with metaphys's default (3,000), and with ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once),
* on the otherwise quiet machine, beside one busy process (a Python busy loop: another job on one core),
  and beside one at nice 19 (as a background training run).

    .venv/bin/python benchmarks/threads_contention.py     # -> benchmarks/results/threads_contention.md
Run it on an otherwise idle machine: its "quiet" rows assume nothing else runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, sys, time
import metaphys                      # first: sets the OpenMP spin count before torch loads
kind, n, threads, warm, timed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if kind == "smoke":
    from metaphys.sims.smoke import SmokeSim
    sim = SmokeSim((n, n), threads=threads)
else:
    import numpy as np
    from metaphys.sims.cloth import ClothSim, flat_cloth
    top = np.zeros(n * n); top[:n] = 1.0
    sim = ClothSim(n, n, threads=threads, rest_positions=flat_cloth(n, n, 1.0, height=1.0, plane="xz"),
                   pin_weights=top, colliders=[], wind=(0.0, 3.0, 0.0))
for _ in range(warm):
    sim.step()
times = []
for _ in range(timed):
    t0 = time.perf_counter(); sim.step(); times.append(time.perf_counter() - t0)
print(json.dumps({"times": times}))
"""

CONFIGS = [  # (label, threads, environment)
    ("1 thread", 1, {}),
    ("2 threads, libgomp's default spinning (300,000)", 2, {"GOMP_SPINCOUNT": "300000"}),
    ("2 threads, 1,000 spins", 2, {"GOMP_SPINCOUNT": "1000"}),
    ("2 threads, metaphys's default (GOMP_SPINCOUNT unset: metaphys sets 3,000)", 2, {}),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
]
# (kind, n, warm-up frames, timed frames, configs): the cloth below 97^2 with one thread and metaphys's
# default only -- the sizes where the sims' thread rule chooses (cloth: 2 threads from 64^2 vertices)
SMALL_CONFIGS = [CONFIGS[0], CONFIGS[3]]
SCENES = [("smoke", 128, 2, 4, CONFIGS), ("cloth", 128, 1, 3, CONFIGS), ("cloth", 64, 2, 10, SMALL_CONFIGS),
          ("cloth", 48, 2, 10, SMALL_CONFIGS), ("cloth", 32, 2, 10, SMALL_CONFIGS)]


def run_child(kind: str, n: int, threads: int, warm: int, timed: int, env_extra: dict, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(env_extra)
    try:
        cp = subprocess.run([sys.executable, "-c", CHILD, kind, str(n), str(threads), str(warm), str(timed)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        return json.loads(cp.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    except (ValueError, IndexError):
        return {"error": (cp.stderr.strip().splitlines() or ["no output"])[-1][:200]}


def busy_process(nice: bool = False) -> subprocess.Popen:
    """Another job on one core: a Python busy loop (``nice``: at nice 19, as a background training run)."""
    return subprocess.Popen((["nice", "-n", "19"] if nice else []) + [sys.executable, "-c", "while True: pass"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "threads_contention.md"))
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per run before it is reported as too slow")
    ap.add_argument("--quick", action="store_true", help="the smoke at 16², one frame, quiet only (a check that it runs)")
    args = ap.parse_args(argv)
    scenes = [("smoke", 16, 1, 1, CONFIGS)] if args.quick else SCENES
    loads = ("quiet",) if args.quick else ("quiet", "one busy process", "a niced busy process")
    load_before = os.getloadavg()[0]
    rows = []
    for load_name in loads:
        busy = busy_process(nice=load_name.startswith("a niced")) if load_name != "quiet" else None
        try:
            time.sleep(1.0 if busy else 0.0)
            for kind, n, warm, timed, configs in scenes:
                for label, threads, env in configs:
                    r = run_child(kind, n, threads, warm, timed, env, args.timeout)
                    med = statistics.median(r["times"]) if "times" in r else float("nan")
                    rows.append(dict(load=load_name, scene=f"{kind} {n}²", config=label, s=med, error=r.get("error", "")))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    write(args.out, rows, load_before)
    return 0


def write(path: str, rows: list, load_before: float) -> None:
    one = {(r["load"], r["scene"]): r["s"] for r in rows if r["config"] == "1 thread"}
    lines = ["# Two threads beside another job (benchmarks/threads_contention.py)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, 1-min load average {load_before:.1f} before the "
             "run. Each row: a fresh process that imports metaphys first (as the CLI and the add-on's bakes do), "
             "median wall seconds per frame. \"one busy process\": a Python busy loop on the side, as another "
             "job on one of the cores.", "",
             "| load | scene | threads and OpenMP waiting | s/frame (median) | vs 1 thread, same load |",
             "|---|---|---|---|---|"]
    for r in rows:
        base = one.get((r["load"], r["scene"]))
        ratio = f"{r['s'] / base:.2f}x" if base and r["s"] == r["s"] else "-"
        value = f"{r['s']:.3f}" if r["s"] == r["s"] else f"- ({r['error']})"
        lines.append(f"| {r['load']} | {r['scene']} | {r['config']} | {value} | {ratio} |")
    notes = kept_notes(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n" + (("\n" + notes) if notes else ""))
    os.replace(tmp, path)


def kept_notes(path: str) -> str:
    """The hand-written notes ("## Notes ..." to the end) of an earlier results file: a rerun replaces the
    table, not what people learned from it."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    at = text.find("\n## Notes")
    return text[at + 1:] if at >= 0 else ""


if __name__ == "__main__":
    sys.exit(main())
