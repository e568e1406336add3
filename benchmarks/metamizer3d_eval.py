"""Held-out evaluation of the 3-D Metamizer (issue #28 item 2): writes benchmarks/results/metamizer3d_eval.md.

Cases (held-out seeds, ``metaphys.seeds.EVAL``; never trained on):
* 3-D Laplace with random obstacle boxes (``eval.cases.laplace3d_random``) at 16^3 and 32^3, 2 samples each;
* 3-D Poisson with two opposite charges and a box obstacle (``eval.cases.poisson3d_charges``, unseen kind);
* a 3-D plume: a buoyant blob in a closed box, Navier-Stokes steps solved by the network (guard and
  acceleration on), the density carried by the monotone 3-D transport.

For the linear cases: iterations until the per-sample MSR falls to a target x its start, for the network's
plain iteration (the paper's optimizer, ``accelerate=0``), the accelerated iteration (``solve``'s default,
subspace memory 20), the untrained network of the same size (what training bought) and plain conjugate
gradients (scipy) on the same linear system (the free nodes' equations of the same 27-point stencil, from the
same zero start). One network iteration costs one network pass and one (plain) or two (accelerated) operator
evaluations; one CG iteration costs one matrix-vector product.

    .venv/bin/python benchmarks/metamizer3d_eval.py [--weights weights/metamizer3d.pt] [--quick]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from metaphys.eval import cases  # noqa: E402
from metaphys.optim.metamizer import Metamizer, MetamizerNet  # noqa: E402
from metaphys.optim.solve import iterate  # noqa: E402
from metaphys.physics.laplace3d import CENTRE_WEIGHT  # noqa: E402

TARGETS = (1e-4, 1e-8, 1e-12)


def load_model(path: str):
    if path.endswith(".pt") and os.path.exists(path[:-3] + ".json"):
        from metaphys.optim.weights import load_torchscript
        return load_torchscript(path), path
    from metaphys.optim.weights import model_from_snapshot
    return model_from_snapshot(path), path


def stencil_matrix(problem, k: int):
    """(A, rhs, free index) of sample k: A = -L on the free nodes (SPD), rhs = (f + L(m*b)) on them, so
    that r = L(u~) + f = rhs - A u_free; the residual MSR of u_free is |rhs - A u|^2 / N_free."""
    fl = problem.fields
    mask = fl["mask"][k, 0].numpy()
    d, h, w = mask.shape
    n = d * h * w
    idx = np.arange(n).reshape(d, h, w)
    rows, cols, vals = [], [], []
    weights = {1: 0.25, 2: 0.125, 3: 0.0625} if problem.stencil == 27 else {1: 1.0}
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            for c in (-1, 0, 1):
                kind = (a != 0) + (b != 0) + (c != 0)
                wgt = CENTRE_WEIGHT[problem.stencil] if kind == 0 else weights.get(kind, 0.0)
                if wgt == 0.0:
                    continue
                src = idx[max(0, -a):d - max(0, a), max(0, -b):h - max(0, b), max(0, -c):w - max(0, c)]
                dst = idx[max(0, a):d - max(0, -a), max(0, b):h - max(0, -b), max(0, c):w - max(0, -c)]
                rows.append(src.ravel())
                cols.append(dst.ravel())
                vals.append(np.full(src.size, wgt))
    L = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    free = np.flatnonzero(mask.ravel() == 0)
    fixed = (mask * fl["bc"][k, 0].numpy()).ravel()
    rhs_full = fl["f"][k, 0].numpy().ravel() + L @ fixed
    A = -L[free][:, free]
    return A.tocsr(), rhs_full[free], free


def cg_history(problem, k: int, maxiter: int):
    A, rhs, free = stencil_matrix(problem, k)
    hist = [float(rhs @ rhs) / len(free)]

    def cb(x):
        r = rhs - A @ x
        hist.append(float(r @ r) / len(free))

    spla.cg(A, rhs, x0=np.zeros_like(rhs), rtol=1e-300, atol=0.0, maxiter=maxiter, callback=cb)
    return np.array(hist)


def network_history(problem, model, iterations: int, accelerate: int):
    opt = Metamizer(model)
    u = problem.initial_guess()
    t = time.perf_counter()
    with torch.no_grad():
        res = iterate(problem, opt, u, opt.init_state(tuple(u.shape)), iterations=iterations,
                      accelerate=accelerate, guard=True)
    return res.history().numpy(), (time.perf_counter() - t) / max(1, res.iterations)


def first_below(hist: np.ndarray, target: float) -> str:
    rel = hist / max(hist[0], 1e-300)
    hit = np.flatnonzero(rel <= target)
    return str(int(hit[0])) if hit.size else f">{len(hist) - 1}"


def linear_case(name, problem, models, iterations, lines):
    lines.append(f"\n### {name} ({'x'.join(map(str, problem.shape[2:]))}, {problem.batch} sample"
                 f"{'s' if problem.batch > 1 else ''}, start MSR "
                 + ", ".join(f"{float(r):.3g}" for r in problem.residual(problem.initial_guess())) + ")\n")
    lines.append("| solver | " + " | ".join(f"it. to {t:g}" for t in TARGETS) + f" | rel. MSR at {iterations} | s/it |")
    lines.append("|---|" + "---|" * (len(TARGETS) + 2))
    rows = []
    for label, model, acc in models:
        hist, per = network_history(problem, model, iterations, acc)
        rows.append((label, hist, per))
    cg = [cg_history(problem.select(torch.tensor([k])), 0, iterations) for k in range(problem.batch)]
    for label, hist, per in rows:
        for k in range(problem.batch):
            h = hist[:, k]
            lines.append(f"| {label} (sample {k}) | " + " | ".join(first_below(h, t) for t in TARGETS)
                         + f" | {h[-1] / h[0]:.2e} | {per:.3f} |")
    for k, h in enumerate(cg):
        lines.append(f"| CG, scipy (sample {k}) | " + " | ".join(first_below(h, t) for t in TARGETS)
                     + f" | {h[min(iterations, len(h) - 1)] / h[0]:.2e} | - |")


def plume(model, size: int, steps: int, ipt: int, lines):
    """A buoyant blob rising in a closed box: per step, the relative residual the network reaches."""
    from metaphys.physics import fluid3d as F3
    mask, bc = F3.box_geometry(1, size, size, size, wall=3)
    problem = F3.Fluid3DProblem(mask, bc, rho=1.0, mu=0.05, dt=1.0)
    r = torch.arange(size, dtype=torch.float64)
    c = size / 2
    blob = torch.exp(-((r.view(-1, 1, 1) - c) ** 2 + (r.view(1, -1, 1) - 0.75 * size) ** 2
                       + (r.view(1, 1, -1) - c) ** 2) / (0.1 * size) ** 2).view(1, 1, size, size, size)
    density = blob * (1 - mask)
    opt = Metamizer(model)
    u = problem.initial_guess()
    state = opt.init_state(tuple(u.shape))
    rel, height = [], []
    for _ in range(steps):
        problem.set_boundary(force=F3.buoyancy_force(0.2 * density))
        res = iterate(problem, opt, u, state, iterations=ipt, guard=True, accelerate=20)
        state = res.state
        rel.append(float(res.residual / res.residuals[0].clamp_min(1e-300)))
        vel = F3.node_velocity(problem, res.u)
        density, _ = F3.transport(density, vel, mask, 1.0)
        u = problem.advance(res.u)
        w = density[0, 0].sum((0, 2))
        height.append(float((w * r).sum() / w.sum()))
    lines.append(f"\n### 3-D plume ({size}^3, {steps} steps, {ipt} iterations per step, guard and acceleration on)\n")
    lines.append("| step | " + " | ".join(str(k + 1) for k in range(steps)) + " |")
    lines.append("|---|" + "---|" * steps)
    lines.append("| residual end / start | " + " | ".join(f"{x:.1e}" for x in rel) + " |")
    lines.append("| density centre row (starts at {:.1f}; up = smaller) | ".format(0.75 * size)
                 + " | ".join(f"{x:.2f}" for x in height) + " |")
    return rel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=os.path.join(ROOT, "weights", "metamizer3d.pt"),
                   help="TorchScript weights (with their .json) or a training checkpoint/snapshot")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "metamizer3d_eval.md"))
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="16^3 only, few iterations (CI)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, source = load_model(args.weights)
    hidden = int(getattr(model, "hidden", 8))
    torch.manual_seed(0)
    untrained = MetamizerNet(hidden=hidden, dims=3).eval()
    iters = 20 if args.quick else args.iterations
    models = [("network, plain", model, 0), ("network, accelerated", model, 20),
              ("untrained network, accelerated", untrained, 20)]
    t0 = time.time()
    lines = ["# 3-D Metamizer: held-out evaluation (issue #28 item 2)", "",
             f"Weights: `{os.path.relpath(source, ROOT)}`; torch {torch.__version__}, 1 thread, "
             f"{os.cpu_count()} CPU cores (busy machine: times are rough). Generated by "
             "`benchmarks/metamizer3d_eval.py`.", "",
             "Iterations until the per-sample residual MSR is at most the target times its start (\">K\": not "
             f"within {iters}); the network runs with the step guard. CG: scipy's conjugate gradients on the "
             "same 27-point system of the free nodes from the same zero start."]
    sizes = (16,) if args.quick else (16, 32)
    for s in sizes:
        linear_case(f"Laplace with obstacles, held out, {s}^3", cases.laplace3d_random(s, n=2), models, iters, lines)
    if not args.quick:
        linear_case("Poisson, two charges and an obstacle (unseen kind), 32^3", cases.poisson3d_charges(32),
                    models, iters, lines)
        lines.append("")
        plume(model, 24, 8, 20, lines)
    lines.append(f"\nTotal time {time.time() - t0:.0f} s.")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
