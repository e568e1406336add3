"""One material, several resolutions: do converged cloths agree on their shape? (issue #12)

For each scene, the converged reference (Newton, relative residual 1e-10) at each grid size;
reported per run: the final frame's lowest point, its bounding-box extent, its centre of mass
and its max edge strain, and the difference of each shape number from the finest grid in % of
the cloth size (target: within 2 %). Max strain at point pins is not a shape number: a point
constraint concentrates stress, so it grows with resolution (the continuum limit is singular).

    python benchmarks/cloth_resolution.py [--sizes 16 32 64] [--frames 12] [--scenes curtain stiff_bend]
writes benchmarks/results/cloth_resolution.md
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from cloth_accuracy import scene  # noqa: E402
from metaphys.sims.cloth import ClothSim  # noqa: E402


def shape(n, name, frames):
    sim = ClothSim(n, n, threads=1, solver="newton", tol=1e-10, step_tol=None, **scene(name, n, frames))
    sim.run(frames)
    p = sim.positions.reshape(-1, 3)
    return {"lowest": float(p[:, 2].min()), "extent": (p.max(0) - p.min(0)).tolist(),
            "centre": p.mean(0).tolist(), "strain": max(r.max_strain for r in sim.records),
            "converged": sum(bool(r.converged) for r in sim.records)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--scenes", nargs="+", default=["curtain", "stiff_bend"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# Cloth shape across resolutions (benchmarks/cloth_resolution.py)", "",
             f"Converged references (Newton, 1e-10), {args.frames} frames at 24 fps, 1 m cloth, default material. "
             "Differences are from the finest grid, in % of the cloth size (target ≤ 2 %).", "",
             "| scene | grid | lowest z (m) | extent x/y/z (m) | centre x/y/z (m) | max strain | Δ lowest | "
             "Δ extent (max) | Δ centre (max) |", "|---|---|---|---|---|---|---|---|---|"]
    for name in args.scenes:
        res = {n: shape(n, name, args.frames) for n in args.sizes}
        fine = res[max(args.sizes)]
        for n in args.sizes:
            r = res[n]
            d_low = 100 * abs(r["lowest"] - fine["lowest"])
            d_ext = 100 * float(np.abs(np.subtract(r["extent"], fine["extent"])).max())
            d_cen = 100 * float(np.abs(np.subtract(r["centre"], fine["centre"])).max())
            lines.append(f"| {name} | {n}² | {r['lowest']:.4f} | {'/'.join(f'{v:.3f}' for v in r['extent'])} | "
                         f"{'/'.join(f'{v:.3f}' for v in r['centre'])} | {100 * r['strain']:.2f} % | "
                         f"{d_low:.2f} % | {d_ext:.2f} % | {d_cen:.2f} % |")
            print(lines[-1], flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cloth_resolution.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
