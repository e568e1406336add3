"""Which sparse factorization Newton-Krylov's lagged preconditioner should use (issue #24 item 2).

Two measurements in one run, 1 thread:
  1. the factorization alone: SciPy's SuperLU (symmetric mode, MMD on A + A^T) against MKL PARDISO
     (symmetric indefinite, METIS) on the cloth's projected Krylov matrix after a few frames of each
     scene: ms per factorization and per triangular solve (median of repeats);
  2. whole frames: the same ClothSim scene with ``factorization="superlu"`` and ``"pardiso"`` (and
     PARDISO with a shorter refactor rule), interleaved twice: median / worst ms per frame, Newton
     iterations, factorizations.

    python benchmarks/cloth_factorizations.py [--sizes 32 64 128] [--frames 8] [--scenes curtain drape]
writes benchmarks/results/cloth_factorizations.md (+ .json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from cloth_accuracy import make_sim  # noqa: E402
from metaphys.optim import pardiso  # noqa: E402
from metaphys.optim.newton import _krylov_matrix  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
VARIANTS = {  # label: (factorization, refactor_after)
    "superlu": ("superlu", 20),
    "pardiso": ("pardiso", 20),
    "pardiso_refactor8": ("pardiso", 8),
}


def _median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def factor_row(scene, n):
    import scipy.sparse.linalg as spla

    sim = make_sim(scene, n, 12, "default")
    for _ in range(3):
        sim.step()
    p, u = sim.problem, sim.a_prev
    free = (p.impose(torch.ones_like(u)).flatten() != 0).cpu().numpy()
    H = _krylov_matrix(p, u, True, free)
    b = np.random.default_rng(0).standard_normal(H.shape[0])
    Hc = H.tocsc()
    opts = dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options={"SymmetricMode": True})
    repeats = 5 if n <= 64 else 2
    lu = spla.splu(Hc, **opts)
    pf = pardiso.PardisoFactor(H, threads=1)
    return dict(scene=scene, size=n, unknowns=H.shape[0], nnz=int(H.nnz),
                superlu_factor_ms=_median_ms(lambda: spla.splu(Hc, **opts), repeats),
                superlu_solve_ms=_median_ms(lambda: lu.solve(b), 20), superlu_fill=int(lu.L.nnz + lu.U.nnz),
                pardiso_factor_ms=_median_ms(lambda: pardiso.PardisoFactor(H, threads=1), repeats),
                pardiso_solve_ms=_median_ms(lambda: pf.solve(b), 20), pardiso_fill=pf.factor_nonzeros)


def frame_rows(scene, n, frames):
    make_sim(scene, n, frames, "default").step()   # imports and caches outside the timings
    runs = {k: [] for k in VARIANTS}
    for _ in range(2):
        for label, (fac, refactor_after) in VARIANTS.items():
            sim = make_sim(scene, n, frames, "default")
            sim.newton.factorization, sim.newton.refactor_after = fac, refactor_after
            times, its = [], 0
            for _ in range(frames):
                t = time.perf_counter()
                rec = sim.step()
                times.append(time.perf_counter() - t)
                its += rec.newton_iterations
            runs[label].append(dict(median=1000 * statistics.median(times), worst=1000 * max(times), its=its,
                                    factorizations=sim.newton.preconditioner.factorizations,
                                    within=sum(bool(r.converged) for r in sim.records)))
    rows = []
    for label, rs in runs.items():
        rows.append(dict(scene=scene, size=n, variant=label, median=min(r["median"] for r in rs),
                         medians=[r["median"] for r in rs], worst=min(r["worst"] for r in rs), its=rs[0]["its"],
                         factorizations=rs[0]["factorizations"], within=rs[0]["within"], frames=frames))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--scenes", nargs="+", default=["curtain", "drape"])
    ap.add_argument("--large-scenes", nargs="+", default=["curtain"], help="scenes at sizes above 64")
    ap.add_argument("--out", default=os.path.join(RESULTS, "cloth_factorizations.md"))
    args = ap.parse_args(argv)
    if not pardiso.available():
        raise SystemExit("MKL PARDISO is not available: install the `mkl` wheel (requirements.txt)")
    torch.set_num_threads(1)
    factors, frames = [], []
    for n in args.sizes:
        for scene in (args.scenes if n <= 64 else args.large_scenes):
            print(f"{scene} {n}^2 ...", flush=True)
            factors.append(factor_row(scene, n))
            frames += frame_rows(scene, n, args.frames)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = ["# Sparse factorizations for the cloth's Newton-Krylov (benchmarks/cloth_factorizations.py)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread "
             f"(torch and MKL); load average {load:.2f} at the end (other jobs share the machine: compare rows of "
             "one scene, measured interleaved in this run).", "",
             "## The factorization alone (projected Krylov matrix after 3 frames)", "",
             "| scene | size | unknowns | SuperLU factor ms | PARDISO factor ms | SuperLU solve ms | PARDISO solve ms "
             "| fill SuperLU (L+U) / PARDISO (L) |", "|---|---|---|---|---|---|---|---|"]
    for r in factors:
        lines.append(f"| {r['scene']} | {r['size']}² | {r['unknowns']} | {r['superlu_factor_ms']:.1f} | "
                     f"{r['pardiso_factor_ms']:.1f} | {r['superlu_solve_ms']:.2f} | {r['pardiso_solve_ms']:.2f} | "
                     f"{r['superlu_fill']:,} / {r['pardiso_fill']:,} |")
    lines += ["", f"## Whole frames ({args.frames} per run, two interleaved runs; ms/frame: the lower run's median, "
                  "both medians, the lower worst frame)", "",
              "| scene | size | variant | ms/frame median | medians of the 2 runs | worst | Newton its | "
              "factorizations | frames within tol |", "|---|---|---|---|---|---|---|---|---|"]
    for r in frames:
        lines.append(f"| {r['scene']} | {r['size']}² | {r['variant']} | {r['median']:.0f} | "
                     f"{' / '.join(f'{m:.0f}' for m in r['medians'])} | {r['worst']:.0f} | {r['its']} | "
                     f"{r['factorizations']} | {r['within']}/{r['frames']} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
        json.dump({"factorizations": factors, "frames": frames}, fh, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
