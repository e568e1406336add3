"""Which tolerance the eye needs (issue #24): the cloth default's per-step error against a converged
step, swept over the tolerance.

For each scene (benchmarks/cloth_accuracy.py's), a reference run (direct Newton to 1e-10) records
every frame's state; then each frame is restarted from the reference state and solved once by the
Newton-Krylov default at each tolerance. Reported: the max and median distance from the reference's
step (edge lengths) and ms per frame. Threads: 1.

    python benchmarks/cloth_tolerance.py [--size 32] [--frames 12] [--scenes curtain ...]
prints JSON lines; the table in benchmarks/results/cloth_tolerance.md was made from them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from cloth_accuracy import scene  # noqa: E402
from metaphys.sims.cloth import ClothSim  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--scenes", nargs="+", default=["curtain", "drape", "moving_collider", "stiff_bend"])
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-8, 1e-6, 1e-5, 1e-4, 1e-3])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    n, frames = args.size, args.frames
    for name in args.scenes:
        ref = ClothSim(n, n, threads=1, solver="newton", tol=1e-10, step_tol=None, newton_linear="direct", frame_time_budget=None,
                       **scene(name, n, frames))
        states, pos = [ref.state_dict()], []
        for _ in range(frames):
            ref.step()
            pos.append(ref.positions.reshape(-1, 3).copy())
            states.append(ref.state_dict())
        for tol in args.tols:
            sim = ClothSim(n, n, threads=1, solver="newton", tol=tol, step_tol=None, **scene(name, n, frames))
            errs, times = [], []
            for k in range(frames):
                sim.problem.fields = {key: v.clone() for key, v in states[k]["fields"].items()}
                sim.a_prev, sim.frame = states[k]["a_prev"].clone(), k
                t0 = time.perf_counter()
                sim.step()
                times.append(time.perf_counter() - t0)
                errs.append(float(np.linalg.norm(sim.positions.reshape(-1, 3) - pos[k], axis=1).max()) / sim.length_unit)
            print(json.dumps(dict(scene=name, size=n, tol=tol, max_err=max(errs), median_err=float(np.median(errs)),
                                  ms=1e3 * float(np.median(times)), ms_max=1e3 * max(times))), flush=True)


if __name__ == "__main__":
    main()
