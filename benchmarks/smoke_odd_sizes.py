"""2-D smoke at grid sizes that are not multiples of 4, with the U-Net's padding (optim/unet.py, ALIGN;
issue #29) and without it (the forward before 2026-12-07), in the same run.

The default SmokeSim (20 accelerated Metamizer iterations per fluid step, the fast forward module,
1 thread), 24 frames of the default plume at each resolution; per setting the median and worst MSR a
fluid step ends at, and the CPU time. Multiples of 4 are unchanged by the padding (the control rows).

    .venv/bin/python benchmarks/smoke_odd_sizes.py [--sizes 64 63 75 96 99] [--frames 24]
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


def run(size: int, frames: int, align: int) -> dict:
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


def write(path: str, rows: list, frames: int) -> None:
    lines = ["# 2-D smoke at sizes that are not multiples of 4 (benchmarks/smoke_odd_sizes.py)", "",
             f"SmokeSim defaults (20 accelerated Metamizer iterations per fluid step, fast module), {frames} frames of "
             f"the default plume, 1 thread; {platform.machine()}, torch {torch.__version__}, run "
             f"{time.strftime('%Y-%m-%d %H:%M')}. padded: the U-Net pads a side that is not a multiple of "
             f"{unet.ALIGN} before its first level (optim/unet.py, since 2026-12-07); unpadded: the forward before. "
             "MSR: the fluid step's mean squared residual when its iterations end (lower is better).", "",
             "| size | side mod 4 | padded: median / worst step MSR | unpadded: median / worst step MSR | "
             "unpadded / padded (median) | CPU ms/frame padded / unpadded |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        p, u = r["padded"], r["unpadded"]
        ratio = f"{u['median_msr'] / p['median_msr']:.3g}" if p["median_msr"] > 0 else "-"
        lines.append(f"| {r['size']}² | {r['size'] % 4} | {p['median_msr']:.1e} / {p['worst_msr']:.1e} | "
                     f"{u['median_msr']:.1e} / {u['worst_msr']:.1e} | {ratio} | "
                     f"{p['cpu_ms_per_frame']:.0f} / {u['cpu_ms_per_frame']:.0f} |")
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps({"frames": frames, "rows": rows}, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 63, 75, 96, 99])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--out", default=os.path.join(common.RESULTS, "smoke_odd_sizes.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for size in args.sizes:
        row = {"size": size}
        for name, align in SETTINGS:
            row[name] = run(size, args.frames, align)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write(args.out, rows, args.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
