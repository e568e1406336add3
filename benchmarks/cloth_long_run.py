"""A long cloth bake with the default settings (issue #24: "a 128² curtain in wind runs 200 frames without
blow-up, every frame within tolerance"), with Blender's cloth on the same scene timed in the same run.

Every frame is checked, not sampled: its step solver converged to the tolerance (``StepRecord.converged``),
it did not hit its iteration or time budget, its positions are finite, and its largest spring strain stays
bounded (a blow-up shows as strain growing without limit long before NaN). Reports per-frame wall and CPU
time (median, 90th percentile, worst, worst / median), Newton iterations, the strain's range over the run
and the frames that failed a check, beside Blender 5.0's cloth (bpy, benchmarks/blender_cloth.py) on the
scene of benchmarks/cloth_accuracy.py.

    python benchmarks/cloth_long_run.py [--size 128] [--frames 200] [--scene curtain] [--no-blender]
writes benchmarks/results/cloth_long_run.md (+ .json). ``--quick``: 16², 24 frames, no Blender (the test).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import metaphys  # noqa: E402,F401  (before torch, as the CLI: it bounds OpenMP's idle spinning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, HERE)
from cloth_accuracy import blender_rows, make_sim  # noqa: E402
from metaphys.io.atomic import atomic_path  # noqa: E402

RESULTS = os.path.join(HERE, "results")
# a frame whose largest spring strain passes this has blown up (the default material sags ~1-6 %)
STRAIN_LIMIT = 0.5


def run(scene: str, n: int, frames: int, progress=None) -> dict:
    sim = make_sim(scene, n, frames, "default", threads=None)
    out = dict(scene=scene, size=n, frames=frames, threads=sim.threads, wall_ms=[], cpu_ms=[], its=[], strain=[],
               failed=[])
    for f in range(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        rec = sim.step()
        out["wall_ms"].append(1000 * (time.perf_counter() - t0))
        out["cpu_ms"].append(1000 * (time.process_time() - c0))
        out["its"].append(rec.newton_iterations)
        out["strain"].append(float(rec.max_strain))
        why = []
        if not rec.converged:
            why.append("not converged")
        if rec.budget_hit:
            why.append(f"budget: {rec.budget_hit}")
        if not np.isfinite(sim.positions).all():
            why.append("non-finite positions")
        if not rec.max_strain < STRAIN_LIMIT:
            why.append(f"strain {rec.max_strain:.3g}")
        if why:
            out["failed"].append(dict(frame=f + 1, why=", ".join(why)))
        if progress:
            progress(f + 1, frames, out)
    return out


def pct(values, q):
    return float(np.percentile(values, q)) if values else math.nan


def summary(r: dict) -> dict:
    wall = r["wall_ms"]
    med = statistics.median(wall)
    return dict(median=med, p90=pct(wall, 90), worst=max(wall), worst_over_median=max(wall) / med,
                cpu_median=statistics.median(r["cpu_ms"]), cpu_worst=max(r["cpu_ms"]),
                its_median=statistics.median(r["its"]), its_max=max(r["its"]), total_s=sum(wall) / 1000,
                strain_min=min(r["strain"]), strain_max=max(r["strain"]),
                within=r["frames"] - len({f["frame"] for f in r["failed"]}))


def write(path: str, r: dict, blender, load_before: float, load_after: float) -> None:
    s = summary(r)
    bl = blender[0] if blender else None
    ratio = f"{s['median'] / bl['ms']:.1f}" if bl else "-"
    lines = ["# A long cloth bake, every frame checked (benchmarks/cloth_long_run.py)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load_before:.1f} before and "
             f"{load_after:.1f} after the run; torch {torch.__version__}. Scene: `{r['scene']}` of "
             f"benchmarks/cloth_accuracy.py at {r['size']}² vertices, {r['frames']} frames at 24 fps, ClothSim's "
             f"defaults ({r['threads']} thread{'s' if r['threads'] > 1 else ''}). A frame is within tolerance when "
             "its step solver converged, it hit no budget, its positions are finite and its largest spring strain "
             f"is below {STRAIN_LIMIT}.", "",
             "| run | frames within tolerance | wall ms/frame median / p90 / worst | worst / median | "
             "CPU ms/frame median / worst | Newton it/frame median / max | largest strain per frame, min .. max | total s | "
             "x Blender (median wall) |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| metaphys default | {s['within']}/{r['frames']} | {s['median']:.0f} / {s['p90']:.0f} / {s['worst']:.0f} | "
             f"{s['worst_over_median']:.1f} | {s['cpu_median']:.0f} / {s['cpu_worst']:.0f} | "
             f"{s['its_median']:g} / {s['its_max']} | {s['strain_min']:.3f} .. {s['strain_max']:.3f} | "
             f"{s['total_s']:.1f} | {ratio} |"]
    if bl:
        lines.append(f"| Blender 5.0 cloth | - | {bl['ms']:.0f} / - / {bl['ms_max']:.0f} | "
                     f"{bl['ms_max'] / bl['ms']:.1f} | - | - | - | {bl['ms'] * r['frames'] / 1000:.1f} (median x frames) | - |")
    lines += ["", "Frames that failed a check: " + (", ".join(f"{f['frame']} ({f['why']})" for f in r["failed"])
                                                    if r["failed"] else "none."), ""]
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write("\n".join(lines))
    with atomic_path(os.path.splitext(path)[0] + ".json") as tmp:
        with open(tmp, "w") as fh:
            json.dump(dict(run=r, summary=s, blender=bl), fh)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="curtain")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--no-blender", action="store_true")
    ap.add_argument("--quick", action="store_true", help="16², 24 frames, no Blender")
    ap.add_argument("--out", default=os.path.join(RESULTS, "cloth_long_run.md"))
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.frames, args.no_blender = 16, 24, True
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]

    def progress(done, total, r):
        if done % 10 == 0 or done == total:
            print(f"frame {done}/{total}: median {statistics.median(r['wall_ms']):.0f} ms, "
                  f"{len(r['failed'])} failed", flush=True)

    r = run(args.scene, args.size, args.frames, progress)
    blender = [] if args.no_blender else blender_rows(args.size, args.frames, [args.scene])
    write(args.out, r, blender, load_before, os.getloadavg()[0])
    print(json.dumps(summary(r)))
    return 0 if not r["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
