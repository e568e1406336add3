"""3-D smoke: the network's precision (float32 or bfloat16) against time and accuracy (issue #28).

The 3-D smoke's fluid step iterates the Metamizer until the step's loss is at its tolerance, so the
network's precision can change how many iterations a step takes, never where it stops. This runs
``SmokeSim3D((n, n, n), threads=1)`` at its defaults with the 3-D network's fast module in float32
and in bfloat16 (``metaphys.optim.fast.sim_network_dtype``: the default where the CPU has bf16 in
hardware), each against the same sim with every fluid step solved by Newton-CG to ``--ref-tol``
(benchmarks/smoke3d_cg.py), and times the network's forward alone in both precisions (4 x n^3, the
smoke's four unknowns, 1 thread).

Reported per precision: CPU s/frame (median, worst), fluid iterations per frame (median, max), steps
that ended at the iteration cap above the tolerance, the relative L2 of all frames' densities against
the reference (issue #28's target: 1e-3) and against the other precision.

    .venv/bin/python benchmarks/smoke3d_precision.py [--size 32] [--frames 24]  # -> results/smoke3d_precision.md
    .venv/bin/python benchmarks/smoke3d_precision.py --size 64 --frames 4 --no-reference --out ...

On a CPU without native bf16 the bfloat16 rows run emulated (slow); the table says which it was.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import metaphys  # noqa: E402,F401  (first: the OpenMP settings before torch loads)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from metaphys.io.atomic import atomic_write_text  # noqa: E402
from metaphys.optim.fast import FastMetamizer, native_bf16, shipped_fast_module, sim_network_dtype  # noqa: E402
from smoke3d_tolerance import run  # noqa: E402  (the plume's frames: densities, CPU, iterations, caps)

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def forward_ms(n: int, dtype: torch.dtype, repeats: int) -> float:
    """Median wall ms of the shipped 3-D fast module's forward on 4 x n^3 (one thread)."""
    mod = shipped_fast_module(3, dtype)
    g = torch.randn(4, 1, n, n, n, dtype=torch.float64)
    args = (g, torch.randn_like(g), torch.randn_like(g), torch.full((4,), 0.05, dtype=torch.float64))
    mod(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mod(*args)
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--ref-tol", type=float, default=1e-13)
    ap.add_argument("--no-reference", action="store_true", help="skip the Newton-CG reference (the costly part)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "smoke3d_precision.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    started = time.strftime("%Y-%m-%d %H:%M")
    native = native_bf16()
    forward = {name: forward_ms(args.size, dt, 5 if args.size <= 32 else 3) for name, dt in PRECISIONS.items()}
    runs = {name: run(args.size, args.frames, optimizer=FastMetamizer(shipped_fast_module(3, dt), dtype=dt))
            for name, dt in PRECISIONS.items()}
    ref = None
    if not args.no_reference:
        from smoke3d_cg import NewtonCGStep
        ref = run(args.size, args.frames, step_solver=NewtonCGStep(args.ref_tol))
    rows, data = [], {}
    for name, r in runs.items():
        other = runs["bfloat16" if name == "float32" else "float32"]
        err = rel_l2(r["density"], ref["density"]) if ref is not None else None
        data[name] = {"cpu_s_median": float(np.median(r["cpu"])), "cpu_s_worst": float(max(r["cpu"])),
                      "cpu_s_total": float(sum(r["cpu"])), "iterations": r["its"], "capped_frames": r["capped_frames"],
                      "residual_max": r["residual_max"], "density_vs_reference": err,
                      "density_vs_other_precision": rel_l2(r["density"], other["density"]),
                      "forward_ms": forward[name]}
        d = data[name]
        err_text = "-" if err is None else f"{err:.2e}{' (<= 1e-3)' if err <= 1e-3 else ''}"
        rows.append(f"| {name}{' (default here)' if PRECISIONS[name] == sim_network_dtype(3) else ''} | "
                    f"{d['forward_ms']:.1f} | {d['cpu_s_median']:.2f} / {d['cpu_s_worst']:.2f} | {d['cpu_s_total']:.1f} | "
                    f"{np.median(r['its']):.0f} / {max(r['its'])} | {r['capped_frames']} | {r['residual_max']:.1e} | "
                    f"{err_text} | {d['density_vs_other_precision']:.1e} |")
    speed = data["float32"]["cpu_s_total"] / data["bfloat16"]["cpu_s_total"]
    lines = [
        "# 3-D smoke: the network's precision (benchmarks/smoke3d_precision.py)", "",
        f"`SmokeSim3D(({args.size},) * 3, threads=1)` at its defaults, {args.frames} frames, the 3-D network's fast module "
        f"in each precision; {platform.machine()}, {os.cpu_count()} cores, native bf16: {'yes' if native else 'no (emulated)'}, "
        f"torch {torch.__version__}, 1-min load average {load:.1f} at the start, run {started}. CPU times (less "
        "sensitive to other jobs than wall time). Density: relative L2 of all frames' densities stacked"
        + (f", against the same sim with every fluid step solved by Newton-CG to {args.ref_tol:g}" if ref is not None
           else " (no reference run: --no-reference)") + ".", "",
        "| network | forward 4 x n³ (ms) | CPU s/frame median / worst | CPU s total | fluid it/frame median / max "
        "| frames at the cap | max end residual | density vs converged | density vs the other precision |",
        "|---|---|---|---|---|---|---|---|---|"] + rows + [
        "", f"bfloat16 / float32 total CPU time: {1 / speed:.2f} ({speed:.2f}x faster)." if speed > 0 else ""]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    atomic_write_text(os.path.splitext(args.out)[0] + ".json",
                      json.dumps({"size": args.size, "frames": args.frames, "native_bf16": native, "load": load,
                                  "started": started, "reference_tol": None if ref is None else args.ref_tol,
                                  "runs": data}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
