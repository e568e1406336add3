"""A default 8x8 game flipbook of 256² cells with motion vectors and a seamless loop, baked end to end.

One `metaphys bake smoke` (the command artists run, in a subprocess, at the bake's default thread
count ``--threads auto``: 2 at 128² on 2 cores; ``--threads 1`` for one core): the default plume simulated
at ``--size`` (128² by default: 256² takes ~9.5 s per frame, far beyond the 3-minute budget, so the
cells are resampled up to 256²) at 24 fps, the sheet taken from frames ``--first`` on with a
``--loop``-frame loop of ``--loop-mode``: ``two_phase`` (default) keeps the 64 sheet frames and
blends them with themselves half a loop later, so the bake simulates ``first - 1 + 64`` frames
(80); ``crossfade`` consumes ``--loop`` extra frames (96 with the defaults: the run before
two_phase). Reported: total bake wall time (simulation + every output: PNG/NPZ/VDB frames, sheets,
preview), the simulation's share and fluid steps, the loop seam's mean absolute difference of the
alpha (last -> first) beside the consecutive frames' mean, median and max (issue #27: seam <=
consecutive mean), and how much the sheet's motion vectors (decoded from the PNG as an engine reads
them) reduce the error of predicting frame k+1 from frame k (mean over the sheet's plain frames).

    .venv/bin/python benchmarks/smoke_flipbook.py            # -> benchmarks/results/smoke_flipbook.md
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from metaphys.io import flipbook as fb  # noqa: E402
from metaphys.io.manifest import read_manifest  # noqa: E402

TARGET_S = 180.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="simulation grid (cells per side)")
    ap.add_argument("--cell", type=int, default=256, help="flipbook cell size (pixels)")
    ap.add_argument("--first", type=int, default=17, help="first baked frame of the sheet")
    ap.add_argument("--loop", type=int, default=16, help="loop frames (two_phase: ramp length)")
    ap.add_argument("--loop-mode", default="two_phase", choices=["two_phase", "crossfade"])
    ap.add_argument("--frames", type=int, help="frames to bake (default: first - 1 + 64, + loop for crossfade)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "smoke_flipbook.md"))
    ap.add_argument("--threads", default="auto",
                    help="the bake's --threads (auto, the bake's default: 2 at 128² on 2 cores; 1: one core)")
    ap.add_argument("--keep", help="bake folder to keep (default: a temporary one)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the interrupted bake in --keep; the total is then the sum of all frames' "
                         "wall times plus this run's time outside its frames (process start, outputs)")
    args = ap.parse_args(argv)
    if args.frames is None:
        args.frames = args.first - 1 + 64 + (args.loop if args.loop_mode == "crossfade" else 0)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or os.path.join(tmp, "bake")
        cmd = [sys.executable, "-m", "metaphys", "bake", "smoke", "--out", out, "--size", str(args.size),
               "--frames", str(args.frames), "--flipbook", "8x8", "--flipbook-cell", str(args.cell),
               "--flipbook-range", f"{args.first}:{args.frames}", "--flipbook-loop", str(args.loop),
               "--flipbook-loop-mode", args.loop_mode,
               "--threads", str(args.threads), "--progress", "none", "--resume" if args.resume else "--force"]
        before = len(read_manifest(os.path.join(out, "manifest.json"))["frames"]) if args.resume else 0
        t0 = time.time()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        total = time.time() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # the bake's own CPU time
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return r.returncode
        m = read_manifest(os.path.join(out, "manifest.json"))
        side = fb.read_sidecar(out)
        back = fb.read_flipbook(out)
        sim_s = sum(f["wall_s"] for f in m["frames"])
        fluid_steps = sum(f["substeps"] for f in m["frames"])
        if args.resume:  # the frames baked before the interruption count with their own wall times
            total = sim_s + total - sum(f["wall_s"] for f in m["frames"][before:])
        seam = fb.loop_seam(back["alpha"])
        a = back["alpha"]
        px = back["motion"] * np.array([side["cell_width"], -side["cell_height"]])  # unity: v up -> rows down
        ratios = []
        plain_end = side["frames"] - 1 - (args.loop if args.loop_mode == "two_phase" else 0)
        for k in range(args.loop, plain_end):  # plain frames (outside the loop's blends)
            none = np.abs(a[k] - a[k + 1]).mean()
            ratios.append(np.abs(fb.warp(a[k], px[k]) - a[k + 1]).mean() / none)
        sizes = {n: os.path.getsize(os.path.join(out, f)) for n, f in side["images"].items()}
    load = os.getloadavg()
    ok_time, ok_seam = total <= TARGET_S, seam["seam"] <= seam["mean"]
    blend = ("the last {L} crossfaded into the first: {F} frames" if args.loop_mode == "crossfade" else
             "a two_phase loop (the frames blended with themselves {H} frames later, {L}-frame ramps on each side "
             "of the seam; docs/flipbooks.md): all {F} frames").format(L=args.loop, F=side["frames"],
                                                                          H=side["frames"] // 2)
    lines = [
        "# Game flipbook: 8x8 sheet of 256² cells with motion vectors and a seamless loop",
        "",
        f"Generated by `benchmarks/smoke_flipbook.py` on {os.cpu_count()} cores (1-minute load average "
        f"{load_before[0]:.2f} before, {load[0]:.2f} at the end: other jobs share the machine), one "
        "`metaphys bake smoke` run:",
        "",
        "    " + " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:]
                         ).replace(out, "OUT").replace("--resume", "--force"),
        "" if not args.resume else
        f"(This run was interrupted after {before} frames and finished with `--resume`: the total adds "
        "every frame's recorded wall time to the resumed run's time outside its frames.)",
        "",
        f"Simulation at {args.size}² (the default plume, 24 fps; 256² takes ~9.5 s per frame, see "
        f"smoke_notes.md, so the cells are resampled up to {args.cell}²), {args.frames} frames; the sheet "
        f"is frames {args.first}..{args.frames} ({len(side['source_frames'])} frames) with {blend} in 8 x 8 "
        f"cells of {side['cell_width']}x{side['cell_height']} ({side['width']}x{side['height']} sheets).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| total bake time (simulation + all outputs) | {total:.1f} s | <= {TARGET_S:.0f} s: "
        f"{'met' if ok_time else 'missed'} |",
        f"| of which simulation frames (sum of frame wall times) | {sim_s:.1f} s ({fluid_steps} fluid steps, "
        f"{sim_s / fluid_steps:.2f} s each) | |",
        f"| of which the end outputs (flipbook, preview, USD) | {total - sim_s:.1f} s (incl. process start) | |",
        f"| CPU time of the bake process (user + system, all threads) | {cpu_s:.1f} s | what the wall time would be "
        "on a free core with 1 thread |",
        f"| loop seam: mean abs. alpha difference last -> first | {seam['seam']:.5f} | <= consecutive mean: "
        f"{'met' if ok_seam else 'missed'} |",
        f"| consecutive frames: mean / median / max | {seam['mean']:.5f} / {seam['median']:.5f} / "
        f"{seam['max']:.5f} | (largest step of the loop, seam included: "
        f"{max(seam['max'], seam['seam']):.5f}) |",
        f"| motion vectors: error of warp(k) vs k+1, relative to k vs k+1 (mean, worst) | "
        f"{np.mean(ratios):.3f}, {np.max(ratios):.3f} | < 1 |",
        f"| motion-vector scale (sidecar) | {side['motion_scale']:g} cell UV per frame | |",
        f"| file sizes: color / emissive / motion / normal | "
        + " / ".join(f"{sizes[k] / 1e6:.1f} MB" for k in ("color", "emissive", "motion", "normal")) + " | |",
        "",
        "The motion-vector row uses the sheet as an engine reads it (8-bit alpha, 16-bit motion decoded "
        "with the sidecar's scale), on the frames outside the loop's blends.",
    ]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text)
    print(json.dumps({"total_s": total, "cpu_s": cpu_s, "sim_s": sim_s, "fluid_steps": fluid_steps, "seam": seam,
                      "mv_ratio_mean": float(np.mean(ratios)), "load_before": load_before, "load_after": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
