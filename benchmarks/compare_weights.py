"""Candidate weights against the shipped ones on held-out cases, with and without the acceleration.

The screen before a full `metaphys eval` (62 min on one core): 14 held-out cases (Laplace 32²-256²,
Poisson, advection-diffusion D 0.1/0.5/2, Burgers mu 0.3 on its solvable steps and mu 1, wave
c 0.5/2, Navier-Stokes L_d), each run with the network alone and with the product's subspace
acceleration (~45 s per weights file), plus an optional large-grid screen (Laplace --large² with
the acceleration: the size the training recipe does not reach, where later snapshots drifted).
Each weights file is a TorchScript export, an EMA snapshot or an averaged snapshot. Writes
OUT/compare_weights.md and OUT/compare_weights.json (the model card's comparison).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: sets the BLAS thread count before numpy loads)

import torch  # noqa: E402

FLOOR = 1e-34


def cases_for(quick: bool):
    """name -> callable(optimizer, accelerate) -> the case's error measure (MSR; fluid: mean L_d)."""
    from metaphys.eval import cases
    from metaphys.eval.harness import _fluid_metric, rollout, stationary

    def last(r):  # a diverged run counts as infinitely bad
        return float("inf") if "diverged" in r else r["curve"][-1]

    def mean(r, key="mean"):
        return float("inf") if "diverged" in r else (r[key] if key == "mean" else sum(r[key]) / len(r[key]))

    def lap(n, its):
        return lambda opt, acc: last(stationary(opt, cases.laplace_random(n), its, accelerate=acc))

    def roll(build, steps, ipt):
        def run(opt, acc):
            problem, hook = build(), None
            if isinstance(problem, tuple):  # (problem, hook) for the wave's emitters
                problem, hook = problem
            return mean(rollout(opt, problem, steps, ipt, hook=hook, accelerate=acc))
        return run

    def fluid(opt, acc):
        r = rollout(opt, cases.fluid_cylinder(32 if quick else 64, 1.0, 0.1), 3 if quick else 10, 20,
                    metric=_fluid_metric, accelerate=acc)
        return mean(r, "L_d")

    n, big, steps = (32, 48, 3) if quick else (64, 256, 10)
    out = {f"laplace{s}": lap(s, 50 if s == 100 else 30) for s in ((32,) if quick else (32, 64, 100))}
    out[f"laplace{big}"] = lap(big, 60)
    pn = 32 if quick else 100
    out[f"poisson{pn}"] = lambda opt, acc: last(stationary(opt, cases.poisson_charges(pn), 50, accelerate=acc))
    for D in ((0.1,) if quick else (0.1, 0.5, 2.0)):
        out[f"diffusion D={D}"] = roll(lambda D=D: cases.diffusion_rotating(n, D), steps, 20)
    # mu = 0.3: the eval case has a root on its first 2 steps only (benchmarks/results/eval_burgers.md)
    for ipt in ((5,) if quick else (5, 20)):
        out[f"burgers mu=0.3 {ipt} it/step"] = roll(lambda: cases.burgers_random(n, 0.3), 2, ipt)
    out["burgers mu=1 20 it/step"] = roll(lambda: cases.burgers_random(n, 1.0), steps, 20)
    for c in ((2.0,) if quick else (0.5, 2.0)):
        out[f"wave c={c}"] = roll(lambda c=c: cases.wave_emitters(n, c), steps, 20)
    out["navier-stokes L_d"] = fluid
    return out


def large_screen(opt, size: int, iterations: int) -> dict:
    """Laplace at a size beyond the training recipe, with the acceleration (the eval's stationary run)."""
    from metaphys.eval import cases
    from metaphys.eval.harness import stationary
    from metaphys.optim.accelerate import DEFAULT_MEMORY
    r = stationary(opt, cases.laplace_random(size), iterations, accelerate=DEFAULT_MEMORY)
    if "diverged" in r:
        return r
    return {"final": r["curve"][-1], "mid": r["curve"][len(r["curve"]) // 2], "seconds": r["seconds"]}


def evaluate(path: str, case_fns, large) -> dict:
    from metaphys.eval.harness import load_any
    from metaphys.optim.accelerate import DEFAULT_MEMORY
    from metaphys.optim.metamizer import Metamizer
    model, _ = load_any(path)
    opt = Metamizer(model.eval())
    t = time.perf_counter()
    res = {"plain": {}, "accelerated": {}}
    for name, fn in case_fns.items():
        res["plain"][name] = float(fn(opt, 0))
        res["accelerated"][name] = float(fn(opt, DEFAULT_MEMORY))
    if large:
        res["large"] = large_screen(opt, *large)
    res["seconds"] = time.perf_counter() - t
    return res


def _dlog(a: float, b: float) -> float:
    a, b = (x if math.isfinite(x) else 1e30 for x in (a, b))
    return math.log10(max(b, FLOOR)) - math.log10(max(a, FLOOR))


def summary(base: dict, cand: dict, mode: str) -> dict:
    d = {k: _dlog(base[mode][k], cand[mode][k]) for k in base[mode]}
    return {"better": sum(x < 0 for x in d.values()), "cases": len(d), "mean_dlog10": sum(d.values()) / len(d),
            "worst_case": max(d, key=d.get), "worst_dlog10": max(d.values())}


def name_of(path: str) -> str:
    return os.path.basename(path)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("candidates", nargs="+", help="weights to compare with --weights (the baseline)")
    p.add_argument("--large", type=int, default=None,
                   help="also run Laplace at this size with the acceleration (1000: ~6 min per weights per 100 it)")
    p.add_argument("--large-iterations", type=int, default=100)
    args = p.parse_args(argv)
    out = common.setup(args)
    monitor = common.LoadMonitor()
    machine = common.machine_info()
    case_fns = cases_for(args.quick)
    large = (args.large, args.large_iterations) if args.large else None
    from metaphys.optim.weights import sha256_of
    paths = [args.weights] + list(args.candidates)
    labels = []
    for path in paths:  # unique column labels, even for the same file twice (a determinism check)
        label = name_of(path)
        labels.append(label if label not in labels else f"{label} #{len(labels) + 1}")
    results = {}
    for path, label in zip(paths, labels):
        results[label] = evaluate(path, case_fns, large)
        results[label]["path"] = path
        # the file's identity: paths like weights/metamizer.pt name other weights once new ones ship
        results[label]["sha256"] = sha256_of(path)
        monitor.sample()
        print(f"[compare] {label}: {results[label]['seconds']:.0f} s", flush=True)
    base = results[labels[0]]
    headers = ["case"] + [f"{x} {m}" for x in labels for m in ("plain", "acc")]
    rows = [[k] + [common.fmt(results[x][m][k]) for x in labels for m in ("plain", "accelerated")]
            for k in case_fns]
    if large:
        rows.append([f"laplace{args.large} acc, it {args.large_iterations}"] + sum(
            (["", "diverged" if "diverged" in results[x]["large"] else common.fmt(results[x]["large"]["final"])]
             for x in labels), []))
    summaries = {}
    lines = []
    for x in labels[1:]:
        summaries[x] = {m: summary(base, results[x], m) for m in ("plain", "accelerated")}
        for m, s in summaries[x].items():
            lines.append(f"- `{x}` {m}: better on {s['better']} of {s['cases']}, mean "
                         f"{s['mean_dlog10']:+.2f} dex against `{labels[0]}` (worst: {s['worst_case']}, "
                         f"{s['worst_dlog10']:+.2f} dex)")
    table = common.md_table(headers, rows)
    load = monitor.report()
    md = ("# Candidate weights against the baseline (held-out cases)\n\n" + common.environment_md(machine, load, None, args)
          + "\nWeights compared (sha256):\n\n" + "\n".join(f"- `{x}`: `{results[x]['path']}`, {results[x]['sha256'][:16]}…"
                                                         for x in labels) + "\n"
          + f"\nBaseline: `{args.weights}`. Lower is better (MSR; Navier-Stokes: mean L_d). Plain = the network "
          "alone; acc = with the subspace acceleration (the product's default).\n\n## Summary\n\n" + "\n".join(lines)
          + "\n\n## Cases\n\n" + table + "\n")
    print("## Summary\n" + "\n".join(lines) + "\n\n" + table)
    common.write(os.path.join(out, "compare_weights.md"), md)
    with open(os.path.join(out, "compare_weights.json"), "w") as fh:
        json.dump({"baseline": args.weights, "results": results, "summaries": summaries}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
