"""3-D smoke: what the fluid step's tolerance buys (issue #28: "the fastest solver that meets the tolerance").

``SmokeSim3D((n, n, n), threads=1)`` at its defaults except the fluid step's stopping rule: the default MSR
``tol`` 1e-10, looser tolerances, and fixed iteration counts (as the 2-D smoke's 20 it/step), each against
the same sim with every fluid step solved by Newton-CG (benchmarks/smoke3d_cg.py) to ``--ref-tol``.
Reported: CPU seconds per frame (median), fluid iterations per frame (median), total fluid steps (the CFL
rule's count, against the reference's), and the relative L2 of all frames' densities stacked (and of the
last frame) against the reference. Issue #28's accuracy target: 1e-3 over the run.

    .venv/bin/python benchmarks/smoke3d_tolerance.py [--size 32] [--frames 24]   # -> results/smoke3d_tolerance.md
"""
from __future__ import annotations

import argparse
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

from smoke3d_cg import NewtonCGStep  # noqa: E402

SETTINGS = [("tol 1e-10 (default)", {}), ("tol 1e-8", {"tol": 1e-8}), ("tol 1e-7", {"tol": 1e-7}),
            ("20 it/step", {"iterations_per_step": 20, "tol": None}),
            ("10 it/step", {"iterations_per_step": 10, "tol": None})]


def run(n: int, frames: int, **settings) -> dict:
    """``frames`` frames of the default 3-D plume at n^3 (one thread, ``settings`` passed to SmokeSim3D):
    densities, CPU time, fluid steps, iterations, frames that hit the iteration cap, the worst end residual."""
    from metaphys.sims.smoke3d import SmokeSim3D
    sim = SmokeSim3D((n, n, n), threads=1, **settings)
    dens, cpu, steps, its = [], [], [], []
    for _ in range(frames):
        c = time.process_time()
        rec = sim.step()
        cpu.append(time.process_time() - c)
        dens.append(sim.density.copy())
        steps.append(rec.substeps)
        its.append(rec.iterations)
    return {"density": np.stack(dens), "cpu": cpu, "steps": sum(steps), "its": its,
            "capped_frames": sum(bool(r.hit_cap) for r in sim.records),
            "residual_max": max(float(r.residual) for r in sim.records)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--ref-tol", type=float, default=1e-13)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "smoke3d_tolerance.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    ref = run(args.size, args.frames, step_solver=NewtonCGStep(args.ref_tol))
    rows = [f"| Newton-CG to {args.ref_tol:g} (reference) | {np.median(ref['cpu']):.2f} | "
            f"{np.median(ref['its']):.0f} CG | {ref['steps']} | 0 | 0 |"]
    for label, settings in SETTINGS:
        r = run(args.size, args.frames, **settings)
        err = np.linalg.norm(r["density"] - ref["density"]) / np.linalg.norm(ref["density"])
        last = np.linalg.norm(r["density"][-1] - ref["density"][-1]) / np.linalg.norm(ref["density"][-1])
        rows.append(f"| {label} | {np.median(r['cpu']):.2f} | {np.median(r['its']):.1f} | {r['steps']} | "
                    f"{err:.2e}{' (<= 1e-3)' if err <= 1e-3 else ''} | {last:.2e} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# 3-D smoke: the fluid step's tolerance against time and accuracy (benchmarks/smoke3d_tolerance.py)", "",
        f"`SmokeSim3D(({args.size},) * 3)` at its defaults but the fluid step's stopping rule, {args.frames} frames, "
        f"1 thread, CPU time; {platform.machine()}, {os.cpu_count()} cores, 1-min load average {load:.1f} at the "
        f"start (times are CPU times: less sensitive to other jobs). Density error: relative L2 of all frames' "
        f"densities against the same sim solved by Newton-CG to {args.ref_tol:g}.", "",
        "| fluid step | CPU s/frame (median) | iterations/frame (median) | fluid steps | density rel. L2 | last frame |",
        "|---|---|---|---|---|---|"] + rows) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        f.write(text)
    os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
