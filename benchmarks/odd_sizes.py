"""What the U-Net's padding of odd sizes (optim/unet.py, ALIGN; issue #29) changes for users: 2-D smoke and
the Metamizer on cloth at grid sizes that are not multiples of 4, padded and unpadded (the forward
before 2026-12-07), in the same run. Multiples of 4 are unchanged by the padding (the control rows).

1. **Smoke**: the default SmokeSim (20 accelerated Metamizer iterations per fluid step, the fast forward
   module, 1 thread), ``--frames`` frames of the default plume per resolution; the median and worst MSR a
   fluid step ends at, and the CPU time.
2. **Cloth, the Metamizer alone**: the eval's hanging cloth (its three materials, ``eval/cases.py``) at
   ``--cloth-sizes`` vertices a side, 20 time steps of 10 plain network iterations (the eval's
   rollout); per material the mean over steps of the gradient norm at the step's end relative to its
   start (lower is better; > 1: the iteration moved away from the answer).
3. **Cloth in the sim, the Metamizer alone**: ``ClothSim(solver="metamizer")`` on the drape of
   benchmarks/cloth_accuracy.py (30 iterations per step, ``--drape-frames`` frames, 1 m cloth) at
   ``--drape-sizes`` vertices a side; the largest vertex distance from a converged Newton run (tol 1e-8)
   of the same frames.

    .venv/bin/python benchmarks/odd_sizes.py [--sizes 64 63 75 96 99] [--frames 24] [--cloth-sizes 32 33 31 35 49]
                                             [--drape-sizes 32 33 31] [--drape-frames 12]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402,F401  (first: sets the BLAS thread count before numpy loads)

import torch  # noqa: E402

import metaphys.optim.fast as fast  # noqa: E402
import metaphys.optim.unet as unet  # noqa: E402
from metaphys.io.atomic import atomic_write_text  # noqa: E402
from metaphys.sims.smoke import SmokeSim  # noqa: E402

SETTINGS = (("padded", unet.ALIGN), ("unpadded", 1))
CLOTH_STEPS, CLOTH_ITERATIONS = 20, 10


def smoke(size: int, frames: int, align: int) -> dict:
    """The default plume at size x size with the U-Net padding sides to a multiple of ``align``."""
    saved = unet.ALIGN
    unet.ALIGN = align                      # read when a U-Net is built
    fast.shipped_fast_module.cache_clear()  # the sims' fast module is built once per process
    try:
        sim = SmokeSim((size, size), threads=1)
        t0 = time.process_time()
        for _ in range(frames):
            sim.step()
        cpu = time.process_time() - t0
    finally:
        unet.ALIGN = saved
        fast.shipped_fast_module.cache_clear()
    msr = [rec.residual for rec in sim.records]
    return {"median_msr": statistics.median(msr), "worst_msr": max(msr), "steps": len(msr),
            "cpu_ms_per_frame": 1e3 * cpu / frames}


def cloth(size: int, align: int) -> dict:
    """The shipped network alone on the eval's hanging cloth at size x size vertices, per material."""
    from metaphys.eval import cases
    from metaphys.eval.harness import _cloth_metric, rollout
    from metaphys.optim.fast import eager_from_any
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.weights_file import load_default_model
    net = eager_from_any(load_default_model())
    net.unet.align = align
    out = {}
    for mat in cases.CLOTH_MATERIALS:
        r = rollout(Metamizer(net), cases.cloth_hanging(size, mat), CLOTH_STEPS, CLOTH_ITERATIONS,
                    metric=_cloth_metric)
        out[mat] = r.get("mean", float("inf"))
    return out


def drape(size: int, frames: int) -> dict:
    """The Metamizer-only drape, padded and unpadded, against a converged Newton run of the same frames."""
    import numpy as np
    from cloth_accuracy import scene
    from metaphys.optim.fast import eager_from_any
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.weights_file import load_default_model
    from metaphys.sims.cloth import ClothSim
    ref = ClothSim(size, size, threads=1, solver="newton", tol=1e-8, step_tol=None, **scene("drape", size, frames))
    for _ in range(frames):
        ref.step()
    out = {}
    for name, align in SETTINGS:
        net = eager_from_any(load_default_model())
        net.unet.align = align
        sim = ClothSim(size, size, threads=1, solver="metamizer", tol=None, iterations_per_step=30,
                       optimizer=Metamizer(net), **scene("drape", size, frames))
        for _ in range(frames):
            sim.step()
        out[name] = float(np.abs(sim.positions.reshape(-1, 3) - ref.positions.reshape(-1, 3)).max())
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}" if b > 0 else "-"


def write(path: str, rows: list, cloth_rows: list, frames: int, drape_rows=(), drape_frames: int = 12) -> None:
    lines = ["# Grid sizes that are not multiples of 4, padded and unpadded (benchmarks/odd_sizes.py)", "",
             f"{platform.machine()}, torch {torch.__version__}, 1 thread, run {time.strftime('%Y-%m-%d %H:%M')}. "
             f"padded: the U-Net pads a side that is not a multiple of {unet.ALIGN} before its first level "
             "(optim/unet.py, since 2026-12-07); unpadded: the forward before. Both settings in this run.", "",
             f"## Smoke (SmokeSim defaults: 20 accelerated Metamizer iterations per fluid step, fast module; {frames} "
             "frames of the default plume)", "",
             "MSR: the fluid step's mean squared residual when its iterations end (lower is better).", "",
             "| size | side mod 4 | padded: median / worst step MSR | unpadded: median / worst step MSR | "
             "unpadded / padded (median) | CPU ms/frame padded / unpadded |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        p, u = r["padded"], r["unpadded"]
        lines.append(f"| {r['size']}² | {r['size'] % 4} | {p['median_msr']:.1e} / {p['worst_msr']:.1e} | "
                     f"{u['median_msr']:.1e} / {u['worst_msr']:.1e} | {_ratio(u['median_msr'], p['median_msr'])} | "
                     f"{p['cpu_ms_per_frame']:.0f} / {u['cpu_ms_per_frame']:.0f} |")
    if cloth_rows:
        mats = list(cloth_rows[0]["padded"])
        lines += ["", f"## Cloth, the Metamizer alone (the eval's hanging cloth, {CLOTH_STEPS} steps x "
                  f"{CLOTH_ITERATIONS} plain iterations)", "",
                  "Per material (stretch_shear_bend): mean over the steps of |gradient| at the step's end / at "
                  "its start (lower is better; > 1: moved away from the answer).", "",
                  "| vertices | side mod 4 | " + " | ".join(f"{m} padded / unpadded" for m in mats) + " |",
                  "|---|---|" + "---|" * len(mats)]
        for r in cloth_rows:
            cells = [f"{r['padded'][m]:.3g} / {r['unpadded'][m]:.3g}" for m in mats]
            lines.append(f"| {r['size']}² | {r['size'] % 4} | " + " | ".join(cells) + " |")
    if drape_rows:
        lines += ["", f"## Cloth in the sim, the Metamizer alone (`ClothSim(solver=\"metamizer\")`, the drape of "
                  f"cloth_accuracy.py, 30 it/step, {drape_frames} frames, 1 m cloth)", "",
                  "Largest vertex distance (m) from a converged Newton run (tol 1e-8) of the same frames.", "",
                  "| vertices | side mod 4 | padded | unpadded |", "|---|---|---|---|"]
        for r in drape_rows:
            lines.append(f"| {r['size']}² | {r['size'] % 4} | {r['padded']:.3f} | {r['unpadded']:.3f} |")
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(os.path.splitext(path)[0] + ".json",
                      json.dumps({"frames": frames, "smoke": rows, "cloth": cloth_rows, "drape": list(drape_rows),
                                  "drape_frames": drape_frames}, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 63, 75, 96, 99], help="smoke resolutions")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--cloth-sizes", type=int, nargs="*", default=[32, 33, 31, 35, 49])
    ap.add_argument("--drape-sizes", type=int, nargs="*", default=[32, 33, 31])
    ap.add_argument("--drape-frames", type=int, default=12)
    ap.add_argument("--out", default=os.path.join(common.RESULTS, "odd_sizes.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows, cloth_rows = [], []
    for size in args.sizes:
        row = {"size": size}
        for name, align in SETTINGS:
            row[name] = smoke(size, args.frames, align)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for size in args.cloth_sizes:
        row = {"size": size}
        for name, align in SETTINGS:
            row[name] = cloth(size, align)
        cloth_rows.append(row)
        print(json.dumps(row), flush=True)
    drape_rows = []
    for size in args.drape_sizes:
        drape_rows.append({"size": size, **drape(size, args.drape_frames)})
        print(json.dumps(drape_rows[-1]), flush=True)
    write(args.out, rows, cloth_rows, args.frames, drape_rows, args.drape_frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
