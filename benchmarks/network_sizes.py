"""The network alone across grid sizes (issue #29): Laplace with obstacles, the plain iteration (the
TorchScript contract's step, no acceleration), 50 iterations, on validation layouts at a sweep of sizes,
grouped by the U-Net's pyramid: its 4 max-pool levels halve the grid (floor), so a size that is not a
multiple of 16 has an odd level somewhere, where the upsampled features are zero-padded back to the
skip connection's size. Every pool of the training recipe is a multiple of 16.

Why: the held-out Laplace 100² is where the network alone regressed (issue #29), and 100 = 4 x 25 has
an odd level at 1/4 scale. This table says which sizes the network alone handles and which it does
not, for the shipped weights and any candidate.

Since 2026-12-07 the U-Net pads a side that is not a multiple of 4 before its first level
(``optim/unet.py``, ``ALIGN``): a weights file exported before that runs such sizes unpadded, one
exported after it padded, so two exports of the same parameters give two different columns here.
The `pyramid` column describes the grid's own size.

    python benchmarks/network_sizes.py [--weights W ...] [--sizes 64 68 ...] [--layouts 16]
                                       [--iterations 50] [--out results/network_sizes.md]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from metaphys.eval.quick import FLOOR, held_out  # noqa: E402
from metaphys.io.atomic import atomic_write_text  # noqa: E402
from metaphys.optim.metamizer import Metamizer  # noqa: E402
from metaphys.optim.solve import DivergenceError, solve  # noqa: E402
from metaphys.optim.weights import DEFAULT_WEIGHTS, is_torchscript, load_torchscript, model_from_snapshot  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
LEVELS = 4
# multiples of 16 (the recipe's kind), odd only at 1/8 scale, odd at 1/4 scale (100: the eval's size),
# odd at 1/2 scale, odd sizes
DEFAULT_SIZES = (64, 80, 96, 112, 128, 88, 104, 120, 68, 84, 92, 100, 108, 90, 98, 63, 65, 99, 101)
LAYOUT_SET = 3   # held_out(..., k=3): layouts used by nothing else (the guard: k = 1, the score: k = 0)


def odd_levels(size: int) -> list:
    """The U-Net levels (0 = full size) whose side is odd, among the 4 that are pooled."""
    return [k for k in range(LEVELS) if (size >> k) % 2 == 1]


def kind_of(size: int) -> str:
    odd = odd_levels(size)
    if not odd:
        return "multiple of 16"
    return "odd at 1/" + ", 1/".join(str(2 ** k) for k in odd) if odd[0] else "odd size"


def unique_labels(paths: list) -> list:
    """Column labels: each file's name, with its sha256's first 8 digits where two names are the same
    (the shipped weights beside a candidate exported under the same name)."""
    from metaphys.optim.weights import sha256_of
    names = [os.path.basename(p) for p in paths]
    labels = [f"{n} {sha256_of(p)[:8]}" if names.count(n) > 1 else n for n, p in zip(names, paths)]
    if len(set(labels)) < len(labels):
        raise SystemExit(f"the same weights file given twice: {paths}")
    return labels


def load_model(path: str):
    """Shipped TorchScript weights as they are (the contract); a training snapshot as its network."""
    return load_torchscript(path) if is_torchscript(path) else model_from_snapshot(path)


def measure(model, size: int, layouts: int, iterations: int) -> dict:
    """The plain iteration on ``layouts`` validation layouts: mean and worst log10 MSR after ``iterations``."""
    problem = held_out("laplace", layouts, size, k=LAYOUT_SET)
    try:
        res = solve(problem, Metamizer(model), iterations=iterations, accelerate=0)
    except DivergenceError as exc:
        return {"diverged": True, "message": str(exc)[:120]}
    last = torch.log10(res.history()[-1].clamp_min(FLOOR))
    return {"diverged": False, "mean_log10": float(last.mean()), "worst_log10": float(last.max()),
            "below_1e-20": int((last <= -20).sum())}


def write(path: str, rows: list, labels: list, args) -> None:
    lines = ["# The network alone across grid sizes (benchmarks/network_sizes.py)", "",
             f"Laplace with obstacles, the plain iteration (no acceleration), {args.iterations} iterations, "
             f"{args.layouts} validation layouts per size (a set of their own), 1 thread; {platform.machine()}, "
             f"torch {torch.__version__}, run {time.strftime('%Y-%m-%d %H:%M')}. Per weights: mean / worst log10 MSR "
             "over the layouts (lower is better; -33 is the floor), and how many layouts reach 1e-20. "
             "`pyramid`: where the U-Net's 4 halvings meet an odd side of the grid (the training recipe's sizes are all "
             "multiples of 16); weights exported since 2026-12-07 pad a side that is not a multiple of 4 to one "
             "first (`optim/unet.py`), so for them the first two levels are never odd.", "",
             "| size | pyramid | " + " | ".join(f"{lab} mean / worst (≤1e-20)" for lab in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for r in rows:
        cells = []
        for lab in labels:
            m = r[lab]
            cells.append("diverged" if m["diverged"] else
                         f"{m['mean_log10']:.1f} / {m['worst_log10']:.1f} ({m['below_1e-20']}/{args.layouts})")
        lines.append(f"| {r['size']}² | {r['kind']} | " + " | ".join(cells) + " |")
    lines += ["", "## By kind of size (median of the per-size means)", "",
              "| pyramid | sizes | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    kinds = {}
    for r in rows:
        group = "multiple of 16" if r["kind"] == "multiple of 16" else (
            "odd size" if r["kind"] == "odd size" else "first odd level at 1/" + str(2 ** odd_levels(r["size"])[0]))
        kinds.setdefault(group, []).append(r)
    for group, rs in kinds.items():
        cells = []
        for lab in labels:
            vals = sorted(33.0 if r[lab]["diverged"] else r[lab]["mean_log10"] for r in rs)
            med = vals[len(vals) // 2]
            cells.append("diverged" if med == 33.0 else f"{med:.1f}")
        lines.append(f"| {group} | {', '.join(str(r['size']) for r in rs)} | " + " | ".join(cells) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps({"rows": rows, "labels": labels, "iterations": args.iterations, "layouts": args.layouts}, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", nargs="+", default=[DEFAULT_WEIGHTS],
                    help="TorchScript weights or training snapshots (the first is the reference)")
    ap.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES))
    ap.add_argument("--layouts", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--out", default=os.path.join(RESULTS, "network_sizes.md"))
    args = ap.parse_args(argv)
    if any(s < 2 ** LEVELS for s in args.sizes):
        ap.error(f"sizes must be >= {2 ** LEVELS} (the U-Net pools {LEVELS} times)")
    torch.set_num_threads(1)
    labels = unique_labels(args.weights)
    models = [load_model(path) for path in args.weights]
    rows = []
    for size in args.sizes:
        row = {"size": size, "kind": kind_of(size)}
        for lab, model in zip(labels, models):
            row[lab] = measure(model, size, args.layouts, args.iterations)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write(args.out, rows, labels, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
