"""Fast held-out check of a training snapshot (used during training to pick checkpoints).

Held-out seeds are disjoint from training seeds. Score = mean over cases of log10(final
residual) (floored at 1e-33) with a large penalty for divergence; lower is better.
"""
from __future__ import annotations

import math
import time

import torch

from metaphys.optim.metamizer import Metamizer
from metaphys.optim.solve import DivergenceError, solve
from metaphys.train import generators

HELD_OUT_SEED = 10**9 + 7
FLOOR = 1e-33


def held_out(pde: str, n: int, size: int, k: int = 0):
    gen = torch.Generator().manual_seed(HELD_OUT_SEED + 1000 * k + size)
    return generators.get(pde)(n, size, size, gen)


def laplace_case(model, size: int, iterations: int, n: int = 2) -> dict:
    problem = held_out("laplace", n, size)
    opt = Metamizer(model)
    try:
        res = solve(problem, opt, iterations=iterations)
    except DivergenceError:
        return {"final": float("inf"), "diverged": True}
    hist = res.history()
    geo = lambda row: float(torch.exp(torch.log(row.clamp_min(FLOOR)).mean()))
    out = {"diverged": False, "final": geo(hist[-1])}
    for k in (10, 25, 50, 100, 200):
        if k < hist.shape[0]:
            out[f"it{k}"] = geo(hist[k])
    return out


def evaluate_snapshot(model, sizes=(32, 64, 100), iterations: int = 100) -> dict:
    t = time.time()
    model = model.eval()
    cases = {f"laplace{s}": laplace_case(model, s, iterations) for s in sizes}
    logs = [math.log10(max(FLOOR, c["final"])) if not c["diverged"] else 10.0 for c in cases.values()]
    return {"score": sum(logs) / len(logs), "cases": cases, "eval_seconds": time.time() - t}
