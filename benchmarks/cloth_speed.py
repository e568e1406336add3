"""Cloth time per frame beside Blender's cloth, timed in the same run (issue #24), no reference solves.

The accuracy of the same settings is benchmarks/cloth_accuracy.py's job (it also times, but its 1e-10
references make a run long, so the machine's load drifts across it). This one runs only the timed
methods and Blender, back to back, so that the ratio is taken on one machine state: run it on a quiet
machine. For each scene and size: wall and CPU ms per frame (median and worst frame), Newton
iterations per frame (median / max), for ClothSim's default (its own thread count: one up to 63^2
vertices, all cores from 64^2) and the same on the other thread count (default_2_threads below 64^2,
default_1_thread from 64^2), then Blender 5.0's cloth (bpy 5.0.1, benchmarks/blender_cloth.py), which uses
its own threads (all cores). Sizes: all scenes at 32^2, curtain, stiff bend and drape at
64^2, curtain and drape at 128^2 (the issue's rows).

    python benchmarks/cloth_speed.py [--sizes 32 64 128] [--frames 12] [--scenes curtain ...]
writes benchmarks/results/cloth_speed.md (+ .json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import metaphys  # noqa: E402,F401  (before torch, as the CLI: it bounds OpenMP's idle spinning)

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cloth_accuracy import RESULTS, blender_rows, make_sim  # noqa: E402
from metaphys.sims.common import threads_for_grid  # noqa: E402


def time_method(name: str, n: int, frames: int, method: str) -> dict:
    # "default": ClothSim's defaults including its thread count (1 below 97^2 vertices, else all cores)
    sim = make_sim(name, n, frames, method, threads=None if method == "default" else 1)
    wall, cpu, its = [], [], []
    for _ in range(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        rec = sim.step()
        wall.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
        its.append(rec.newton_iterations)
    return dict(scene=name, size=n, method=method, ms=statistics.median(wall), ms_max=max(wall),
                cpu_ms=statistics.median(cpu), cpu_ms_max=max(cpu), its=statistics.median(its), its_max=max(its),
                converged=sum(bool(r.converged) for r in sim.records), frames=frames, threads=sim.threads)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--scenes", nargs="+", default=["curtain", "stiff_bend", "drape", "moving_collider"])
    ap.add_argument("--large-scenes", nargs="+", default=["curtain", "stiff_bend", "drape"],
                    help="scenes at sizes above 32")
    ap.add_argument("--xl-scenes", nargs="+", default=["curtain", "drape"], help="scenes at sizes of 128 and above")
    ap.add_argument("--methods", nargs="+", default=["default", "other_threads"],
                    help="cloth_accuracy.METHODS; other_threads: the default on the thread count it does not pick "
                         "(2 below 97^2, 1 above)")
    ap.add_argument("--no-blender", action="store_true", help="skip Blender's cloth (the ratio column stays empty)")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = []
    for n in args.sizes:
        scenes = args.scenes if n <= 32 else args.large_scenes if n < 128 else args.xl_scenes
        for name in scenes:
            for method in args.methods:
                if method == "other_threads":
                    method = "default_2_threads" if threads_for_grid(n, n, cloth=True) == 1 else "default_1_thread"
                rows.append(time_method(name, n, args.frames, method))
                print(json.dumps(rows[-1]), flush=True)
        for b in ([] if args.no_blender else blender_rows(n, args.frames, scenes)):
            rows.append(dict(scene=b["scene"], size=n, method="Blender cloth", ms=b["ms"], ms_max=b["ms_max"],
                             cpu_ms=float("nan"), cpu_ms_max=float("nan"), its=float("nan"), its_max=float("nan"),
                             converged=0, frames=args.frames))
    write(args, rows, load_before, os.getloadavg()[0])


def write(args, rows, load_before, load_after):
    os.makedirs(args.out, exist_ok=True)
    nan = lambda v: v != v
    blender = {(r["scene"], r["size"]): r["ms"] for r in rows if r["method"] == "Blender cloth"}
    lines = ["# Cloth time per frame beside Blender's cloth (benchmarks/cloth_speed.py)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load_before:.1f} before and "
             f"{load_after:.1f} after the run; torch {torch.__version__}; Blender on its own threads; "
             f"{args.frames} frames at 24 fps, the scenes of benchmarks/cloth_accuracy.py (whose results give the "
             "accuracy of the same settings). default: ClothSim's defaults, including its thread count (one up to "
             "63² vertices, all cores (here 2) from 64²: `threads_for_grid(..., cloth=True)`); default_2_threads / "
             "default_1_thread: the same on the other thread count (`threads=2`: what a machine with an idle core "
             "gets below 64²).", "",
             "| scene | size | method | threads | wall ms/frame median / worst | CPU ms/frame median / worst | "
             "Newton it/frame median / max | within tol | x Blender (median wall) | worst / median |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        anchor = blender.get((r["scene"], r["size"]))
        ratio = "-" if anchor is None or r["method"] == "Blender cloth" else f"{r['ms'] / anchor:.1f}"
        cpu = "-" if nan(r["cpu_ms"]) else f"{r['cpu_ms']:.0f} / {r['cpu_ms_max']:.0f}"
        its = "-" if nan(r["its"]) else f"{r['its']:g} / {r['its_max']}"
        conv = "-" if r["method"] == "Blender cloth" else f"{r['converged']}/{r['frames']}"
        threads = r.get("threads", "-")
        lines.append(f"| {r['scene']} | {r['size']}² | {r['method']} | {threads} | {r['ms']:.0f} / {r['ms_max']:.0f} | {cpu} | "
                     f"{its} | {conv} | {ratio} | {r['ms_max'] / r['ms']:.1f} |")
    if not blender:
        lines += ["", "Blender's cloth was not timed in this run (--no-blender, or bpy missing: `make test-blender` "
                  "installs it)."]
    with open(os.path.join(args.out, "cloth_speed.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "cloth_speed.json"), "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
