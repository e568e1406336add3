"""Laplace solver comparison (paper Fig. 6/13; notes section 9.1), all methods side by side.

Problems: the notes' benchmark (2-cell frame, b = (j/W)(i/H), exact solution b) and a held-out
random problem (metaphys.problems.grid.make_laplace, seed disjoint from training), at 100^2
and 400^2 (--quick: the benchmark problem at 32^2).

Methods:
* Metamizer, the shipped TorchScript module as loaded ("metamizer") and the frozen channels_last
  module of metaphys.optim.fast ("metamizer-fast", same steps to ~1e-6), plus the opt-in bfloat16
  network ("metamizer-fast-bf16") where the CPU has native bf16, and "metamizer-fast-acc": the
  fast module with the subspace acceleration (optim/accelerate.py, memory 20), the product's
  default iteration;
* torch.optim SGD/Adam/AdamW/RMSprop/Adagrad/Adadelta fed the same pseudo-gradient, each with an
  lr sweep (short budget), the best lr (lowest MSR reached) rerun with the full budget;
* scipy cg/minres/gmres/lgmres/gcrotmk on the SPD system of baselines.laplace_system, pyamg
  Ruge-Stuben and smoothed aggregation (stationary V-cycles, and SA as a CG preconditioner), and
  a direct sparse solve (SuperLU).

MSR: every method's solutions are turned into fields and evaluated with LaplaceProblem.residual
(the same float64 op; for the torch loops it is the loss they compute anyway).

Timing (wall clock, medians):
* torch loops (Metamizer, torch.optim): one run per repeat through metaphys.optim.solve.iterate
  with a perf_counter stamp after every iteration (the residual is computed by the loop anyway);
  time to a threshold = the stamp of the first iteration at or below it.
* scipy/pyamg: a separate *recording* run with a callback that evaluates the MSR of every iterate
  (not timed) gives the first iteration k* at or below each threshold; the time to the threshold
  is then a fresh *unrecorded* run with maxiter = k* (no callback), median of repeats. The time
  panel of the plots uses such prefix runs at geometrically spaced iteration counts. pyamg times
  include its setup (hierarchy construction), reported separately as well; matrix assembly is
  excluded for all (it is a format conversion, listed once).
"""
from __future__ import annotations

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: sets the BLAS thread count before numpy loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402


THRESHOLDS = (1e-10, 1e-20, 1e-30)

TORCH_GRIDS = {
    "adam": [1e-4, 1e-3, 1e-2, 1e-1],
    "adamw": [1e-4, 1e-3, 1e-2, 1e-1],
    "rmsprop": [1e-5, 1e-4, 1e-3, 1e-2],
    "adagrad": [1e-3, 1e-2, 1e-1, 1.0],
    "adadelta": [1.0, 10.0, 100.0, 1000.0],
}


def sgd_grid(problem):
    """SGD's lr has units u/gradient: the pseudo-gradient is -6(1-m)r/N_free, so lr = N_free/18 is
    the Jacobi step u += r/3. Sweep around it (and the paper's 0.01)."""
    n_free = float((1 - problem.fields["mask"]).sum())
    jac = n_free / 18.0
    return [0.01] + [jac * f for f in (0.01, 0.1, 0.5, 1.0, 1.3)]


# --------------------------------------------------------------------------------------------
# torch loops
# --------------------------------------------------------------------------------------------
def run_torch_loop(problem, optimizer, iterations, repeats, tol=None, accelerate=0):
    """Histories/stamps of ``repeats`` runs; returns (history, median stamps, u)."""
    from metaphys.optim.solve import DivergenceError
    runs = []
    for _ in range(repeats):
        try:
            hist, stamps, cpu, u = common.run_iterations(problem, optimizer, iterations, tol=tol, accelerate=accelerate)
        except DivergenceError as exc:
            return {"diverged": str(exc)}
        runs.append((hist, stamps, cpu, u))
    hist, _, _, u = runs[-1]
    n = min(len(r[1]) for r in runs)
    stamps = [common.median(r[1][i] for r in runs) for i in range(n)]
    cpu = [common.median(r[2][i] for r in runs) for i in range(n)]
    final = float(problem.residual(u)[0])
    return {"r": hist[:n], "t": stamps, "cpu": cpu, "u": u, "final": final, "iters": n - 1,
            "per_it": stamps[-1] / max(1, n - 1), "per_it_cpu": cpu[-1] / max(1, n - 1)}


def torch_optimizer_sweep(problem, name, k_sweep, quick=False):
    from metaphys.optim.baselines import TorchOptimizer
    from metaphys.optim.solve import DivergenceError
    grid = sgd_grid(problem) if name == "sgd" else TORCH_GRIDS[name]
    if quick:
        grid = grid[-2:]
    results = []
    for lr in grid:
        try:
            hist, _, _, _ = common.run_iterations(problem, TorchOptimizer(name, lr), k_sweep)
            best = min(h for h in hist if math.isfinite(h))
        except DivergenceError:
            best = float("inf")
        results.append((best, lr))
    results.sort()
    return results[0][1], results


# --------------------------------------------------------------------------------------------
# scipy / pyamg
# --------------------------------------------------------------------------------------------
class Linear:
    """One classical method on the SPD system: run(maxiter, callback) -> x."""

    def __init__(self, method, A, b):
        import scipy.sparse.linalg as spla
        self.method, self.A, self.b = method, A, b
        self.spla = spla
        self.setup_s = 0.0
        self.ml = None

    def setup(self):
        if self.method.startswith("pyamg"):
            import pyamg
            t = time.perf_counter()
            if self.method == "pyamg_rs":
                ml = pyamg.ruge_stuben_solver(self.A)
            else:
                ml = pyamg.smoothed_aggregation_solver(self.A)
            return ml, time.perf_counter() - t
        return None, 0.0

    def run(self, maxiter, callback=None, A=None):
        A = self.A if A is None else A
        m = self.method
        if m == "direct":
            return self.spla.spsolve(self.A.tocsc(), self.b)
        if m.startswith("pyamg"):
            ml, _ = self.setup()
            accel = "cg" if m == "pyamg_sa_cg" else None
            return ml.solve(self.b, x0=np.zeros_like(self.b), tol=1e-300, maxiter=maxiter, accel=accel,
                            callback=callback)
        fn = getattr(self.spla, m)
        kw = {"maxiter": maxiter, "callback": callback, "rtol": 1e-300}
        if m != "minres":
            kw["atol"] = 0.0
        if m == "gmres":
            kw["callback_type"] = "x"  # one callback per restart cycle (restart = scipy's default 20)
        x, _ = fn(A, self.b, **kw)
        return x


UNITS = {"cg": "iteration", "minres": "iteration", "gmres": "restart cycle (20 inner)",
         "lgmres": "outer iteration (30+3 inner)", "gcrotmk": "outer iteration (20 inner)",
         "pyamg_rs": "V-cycle", "pyamg_sa": "V-cycle", "pyamg_sa_cg": "PCG iteration (1 V-cycle)",
         "direct": "—"}


def run_linear(problem, method, A, b, free_index, cap, repeats, quick):
    from scipy.sparse.linalg import LinearOperator
    from metaphys.optim.baselines import field_from_free

    lin = Linear(method, A, b)

    def msr(x):
        return float(problem.residual(field_from_free(problem, x, free_index))[0])

    out = {"unit": UNITS[method]}
    if method == "direct":
        t, c, x = common.timed(lambda: lin.run(1), repeats)
        out.update({"r": [msr(np.zeros_like(b)), msr(x)], "final": msr(x), "crossings": {},
                    "t_curve": [0.0, t], "r_curve": [msr(np.zeros_like(b)), msr(x)], "iters": 1, "solve_s": t,
                    "per_it": t, "per_it_cpu": c})
        for th in THRESHOLDS:
            out["crossings"][th] = (1, t, msr(x), c) if msr(x) <= th else None
        return out
    # recording run: the MSR of every iterate, and the matvec count at every callback
    count = [0]

    def mv(v):
        count[0] += 1
        return A @ v

    op = LinearOperator(A.shape, matvec=mv, dtype=np.float64)
    hist, mvs = [msr(np.zeros_like(b))], [0]

    def cb(xk):
        hist.append(msr(np.asarray(xk)))
        mvs.append(count[0])

    krylov = method in ("cg", "minres", "gmres", "lgmres", "gcrotmk")
    lin.run(cap, cb, A=op if krylov else None)
    out["r"], out["iters"] = hist, len(hist) - 1
    if krylov:
        out["matvecs"] = mvs
    if method.startswith("pyamg"):
        out["setup_s"] = common.median(lin.setup()[1] for _ in range(repeats))

    def time_prefix(k):
        def go():
            return lin.run(k)
        t, c, x = common.timed(go, repeats)
        return t, msr(x), c

    out["crossings"] = {}
    for th in THRESHOLDS:
        k = common.first_below(hist, th)
        if k is None:
            out["crossings"][th] = None
            continue
        t, r, c = time_prefix(k)
        out["crossings"][th] = (k, t, r, c)
    # time curve: prefix runs at geometric iteration counts
    n_curve = 4 if quick else (6 if A.shape[0] > 50000 else 12)
    ks = sorted({int(round(v)) for v in np.geomspace(1, max(1, len(hist) - 1), n_curve)})
    tc, rc = [0.0], [hist[0]]
    for k in ks:
        t, r, _ = time_prefix(k)
        tc.append(t)
        rc.append(r)
    out["t_curve"], out["r_curve"] = tc, rc
    out["final"] = hist[-1]
    tfull, cfull, _ = common.timed(lambda: lin.run(len(hist) - 1), 1)
    out["per_it"] = max(0.0, tfull - out.get("setup_s", 0.0)) / max(1, len(hist) - 1)
    out["per_it_cpu"] = max(0.0, cfull - out.get("setup_s", 0.0)) / max(1, len(hist) - 1)
    return out


# --------------------------------------------------------------------------------------------
def bench_problem(label, problem, models, args, caps, monitor):
    from metaphys.optim.baselines import TORCH_OPTIMIZERS, laplace_system
    from metaphys.optim.accelerate import DEFAULT_MEMORY
    from metaphys.optim.metamizer import Metamizer

    h = problem.shape[-1]
    repeats = args.repeats or (1 if (h >= 300 or args.quick) else 3)
    res = {}
    print(f"[laplace] {label}: MSR(u0) = {float(problem.residual(problem.initial_guess())[0]):.3e}", flush=True)
    # learned optimizer (stop at the last threshold or the cap)
    runs = [(name, model, 0) for name, model in models.items()]
    runs.append(("metamizer-fast-acc", models["metamizer-fast"], DEFAULT_MEMORY))  # the product's default
    for name, model, accelerate in runs:
        r = run_torch_loop(problem, Metamizer(model), caps["metamizer"], repeats, tol=THRESHOLDS[-1] * 0.999,
                           accelerate=accelerate)
        res[name] = r
        monitor.sample()
        print(f"  {name}: {r.get('iters')} its, final {r.get('final', float('nan')):.2e}, "
              f"{common.fmt_time(r.get('per_it'))}/it", flush=True)
    # torch.optim baselines
    from metaphys.optim.baselines import TorchOptimizer
    for name in TORCH_OPTIMIZERS:
        lr, sweep = torch_optimizer_sweep(problem, name, caps["sweep"], args.quick)
        r = run_torch_loop(problem, TorchOptimizer(name, lr), caps["torch"], 1 if h >= 300 else min(repeats, 2),
                           tol=THRESHOLDS[-1] * 0.999)
        r["lr"], r["sweep"] = lr, sweep
        res[name] = r
        monitor.sample()
        print(f"  {name}: lr {lr:.3g}, final {r.get('final', float('nan')):.2e}", flush=True)
    # classical
    t = time.perf_counter()
    A, b, free_index = laplace_system(problem)
    assembly = time.perf_counter() - t
    for method in ("cg", "minres", "gmres", "lgmres", "gcrotmk", "pyamg_rs", "pyamg_sa", "pyamg_sa_cg", "direct"):
        r = run_linear(problem, method, A, b, free_index, caps[method] if method in caps else caps["linear"], repeats,
                       args.quick)
        res[method] = r
        monitor.sample()
        print(f"  {method}: {r['iters']} its, final {r['final']:.2e}", flush=True)
    return res, {"assembly_s": assembly, "unknowns": A.shape[0], "repeats": repeats}


def crossing(r, th, torch_loop):
    """(iterations, wall seconds, CPU seconds) to reach th, or None."""
    if "diverged" in r:
        return None
    if torch_loop:
        k = common.first_below(r["r"], th)
        return None if k is None else (k, r["t"][k], r["cpu"][k])
    c = r["crossings"].get(th)
    if c is None:
        return None
    return (c[0], c[1], c[3])  # pyamg prefix runs include the setup


def table(label, res, info, torch_names):
    headers = ["method", "lr", "unit"] + [f"its→{th:.0e}" for th in THRESHOLDS] + \
              [f"time→{th:.0e}" for th in THRESHOLDS] + ["CPU→1e-20", "final MSR", "its run", "time/it (CPU)",
                                                          "vs CG wall (CPU)"]
    cg = crossing(res["cg"], 1e-20, False)
    rows = []
    for name, r in res.items():
        tl = name in torch_names
        if "diverged" in r:
            rows.append([name, f"{r.get('lr', '')}", "", *["diverged"] * 7, "—", "—", "—", "—"])
            continue
        cs = [crossing(r, th, tl) for th in THRESHOLDS]
        its = [common.fmt(c[0]) if c else "—" for c in cs]
        if not tl and "matvecs" in r and r["unit"] not in ("iteration", "V-cycle", "PCG iteration (1 V-cycle)"):
            its = [f"{c[0]} ({r['matvecs'][c[0]]} mv)" if c else "—" for c in cs]
        ts = [common.fmt_time(c[1]) if c else "—" for c in cs]
        ratio = "—"
        c20 = cs[1]
        if c20 and cg:
            ratio = f"{c20[1] / cg[1]:.2g}× ({c20[2] / max(cg[2], 1e-9):.2g}×)"
        lr = f"{r['lr']:.3g}" if "lr" in r else ""
        unit = "iteration" if tl else r.get("unit", "")
        per = f"{common.fmt_time(r.get('per_it'))} ({common.fmt_time(r.get('per_it_cpu'))})"
        if name.startswith("pyamg"):
            per += f" +{common.fmt_time(r.get('setup_s'))} setup"
        rows.append([name, lr, unit, *its, *ts, common.fmt_time(c20[2]) if c20 else "—", common.fmt(r["final"]),
                     r["iters"], per, ratio])
    return common.md_table(headers, rows)


HEADLINE = ["problem", "Metamizer variant", "Metamizer wall (CPU)", "scipy CG wall (CPU)", "ratio wall (CPU)",
            "pyamg SA+CG wall (CPU)", "ratio wall (CPU)", "its Metamizer / CG", "time/it Metamizer"]


def headline_row(label, name, res):
    cg, amg = crossing(res["cg"], 1e-20, False), crossing(res["pyamg_sa_cg"], 1e-20, False)
    m = crossing(res[name], 1e-20, True)

    def wc(c):
        return f"{common.fmt_time(c[1])} ({common.fmt_time(c[2])})" if c else "—"

    def ratio(a, b):
        return f"{a[1] / b[1]:.3g}× ({a[2] / max(b[2], 1e-9):.3g}×)" if a and b else "—"

    mm = wc(m) if m else f"not reached (final {common.fmt(res[name].get('final'))} after {res[name].get('iters')} its)"
    return [label, name, mm, wc(cg), ratio(m, cg), wc(amg), ratio(m, amg),
            f"{m[0] if m else '—'} / {cg[0] if cg else '—'}", common.fmt_time(res[name].get("per_it"))]


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None, help="comma-separated grid sizes (default 100,400; --quick 32)")
    args = p.parse_args(argv)
    out = common.setup(args)
    monitor = common.LoadMonitor()
    machine = common.machine_info()
    model, wdesc = common.load_weights(args.weights)
    from metaphys.optim.fast import native_bf16, optimize_for_inference
    models = {"metamizer": model, "metamizer-fast": optimize_for_inference(model)}
    if native_bf16():
        models["metamizer-fast-bf16"] = optimize_for_inference(model, dtype=torch.bfloat16)
    if args.quick:
        sizes = [32]
        caps = {"metamizer": 60, "sweep": 20, "torch": 60, "linear": 150, "gmres": 20, "lgmres": 15,
                "gcrotmk": 15, "pyamg_rs": 30, "pyamg_sa": 30, "pyamg_sa_cg": 30, "minres": 200}
    else:
        sizes = [100, 400]
    if args.sizes:
        sizes = [int(v) for v in args.sizes.split(",")]
    problems = []
    for s in sizes:
        problems.append((f"benchmark {s}x{s}", common.laplace_benchmark(s)))
        if not args.quick:  # the quick (CI) run checks the plumbing on the benchmark problem only
            problems.append((f"random {s}x{s} (held out)", common.laplace_random(s)))
    from metaphys.optim.baselines import TORCH_OPTIMIZERS
    torch_names = set(models) | {"metamizer-fast-acc"} | set(TORCH_OPTIMIZERS)
    sections, headline = [], []
    for label, problem in problems:
        s = problem.shape[-1]
        if not args.quick:
            big = s >= 300
            caps = {"metamizer": 500 if big else 300, "sweep": 200 if big else 500, "torch": 2000 if big else 5000,
                    "linear": 5000 if big else 2000, "minres": 6000 if big else 3000, "gmres": 100 if big else 200,
                    "lgmres": 50 if big else 100, "gcrotmk": 50 if big else 100,
                    "pyamg_rs": 60, "pyamg_sa": 60, "pyamg_sa_cg": 60}
        res, info = bench_problem(label, problem, models, args, caps, monitor)
        slug = label.split()[0] + f"{s}"
        png = f"laplace_{slug}.png"
        curves = {}
        for name, r in res.items():
            if "diverged" in r:
                continue
            if name in torch_names:
                curves[name] = {"t": r["t"], "r": r["r"], "style": "-" if name.startswith("metamizer") else "--"}
            else:
                curves[name] = {"t": r["t_curve"], "t_r": r["r_curve"], "r": r["r"],
                                "it": r.get("matvecs") if r.get("matvecs") else None,
                                "marker": "o" if name in ("direct",) or name.startswith("pyamg") else None}
                if curves[name]["it"] is None:
                    curves[name].pop("it")
                if name == "direct":  # one point: (solve time, MSR)
                    curves[name].update({"t": r["t_curve"][1:], "t_r": r["r_curve"][1:], "r": []})
        common.plot_curves(os.path.join(out, png), f"Laplace {label}: MSR vs wall time / iterations",
                           curves, THRESHOLDS,
                           xlabel_iter="iterations (scipy Krylov: matvecs; pyamg: V-cycles / PCG iterations)")
        text = [f"### {label}", "",
                f"{info['unknowns']} free unknowns; MSR(u0) = {res['cg']['r'][0]:.3e}; matrix assembly "
                f"{common.fmt_time(info['assembly_s'])} (excluded); repeats per timing: {info['repeats']}.", "",
                table(label, res, info, torch_names), "",
                f"![{label}]({png})", ""]
        if label.startswith("benchmark"):
            b = problem.fields["bc"]
            errs = []
            for name in list(models) + ["metamizer-fast-acc", "cg", "pyamg_sa", "direct"]:
                r = res.get(name, {})
                if "u" in r:
                    errs.append(f"{name} {float((r['u'] - b).abs().max()):.1e}")
            if errs:
                text.insert(-3, "Max |u − exact| of the final torch-loop solutions: " + ", ".join(errs) + ".\n")
        sweeps = []
        for name in TORCH_OPTIMIZERS:
            if name in res and "sweep" in res[name]:
                sweeps.append(f"{name}: " + ", ".join(f"{lr:.3g}→{v:.1e}" for v, lr in sorted(res[name]["sweep"],
                                                                                            key=lambda t: t[1])))
        text.insert(-3, f"lr sweep ({caps['sweep']} iterations each; lowest MSR reached): " + "; ".join(sweeps) + "\n")
        sections.append("\n".join(text))
        for name in list(models) + ["metamizer-fast-acc"]:
            headline.append(headline_row(label, name, res))
    load = monitor.report()
    md = ["# Laplace: Metamizer vs torch.optim vs scipy/pyamg (paper Fig. 6/13)", "",
          common.environment_md(machine, load, wdesc, args), "",
          "## Headline: time to MSR 1e-20", "",
          common.md_table(HEADLINE, headline),
          "CPU = process CPU time (one thread per method): what the run costs on an otherwise idle core.",
          "", "## How it was measured", "", __doc__.split("Timing (wall clock, medians):")[1].strip(), "",
          "- Iteration units differ: a Metamizer/torch.optim iteration is one residual+gradient evaluation "
          "(≈ one matvec) plus the optimizer; scipy GMRES/LGMRES/GCROT-M(k) count outer cycles (matvecs in "
          "brackets); pyamg counts V-cycles. The iteration panel of the plots uses matvecs for the Krylov "
          "solvers.",
          "- 'final MSR' is recomputed with LaplaceProblem.residual from the returned solution; runs stop at "
          "MSR ≤ 1e-30 or at the cap ('its run'). torch loops stop at the first iteration at or below 1e-30.",
          "- metamizer-fast = metaphys.optim.fast.optimize_for_inference (frozen TorchScript, channels_last, "
          "fused normalization); same steps as the shipped module to ~1e-6. metamizer-fast-bf16 runs the "
          "U-Net in bfloat16 (opt-in; different steps).",
          "", "## Results", ""] + sections
    common.write(os.path.join(out, "laplace.md"), "\n".join(md))
    print("\n## Headline: time to MSR 1e-20\n")
    print(common.md_table(HEADLINE, headline))
    print(f"wrote {os.path.join(out, 'laplace.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
