"""One implicit time step of nonlinear PDEs: Metamizer vs Newton-Krylov vs L-BFGS vs Adam.

Problems (100^2 grid / 100x100 vertices; --quick: 32^2), all from rest / the initial condition:
* Burgers, backward Euler, dt = 1, mu = 0.3 and 1, the notes' section 8.5 initial condition
  (81 Fourier modes, held-out seed; metaphys.eval.cases.burgers_random), periodic stencils,
  zero 2-cell frame. Residual = MSR: mean over free cells and both channels of r^2 with
  r = (v - v_old)/dt + (v.grad)v - mu*L9(v) (the BurgersProblem loss).
* Navier-Stokes around a cylinder (diameter D = H/10, wind tunnel with inflow |v| = 0.5,
  fluid_geometry + add_obstacle), first trapezoidal step from rest, dt = 1, Re = rho|v|D/mu = 10
  (rho 1, mu 0.5) and 200 (rho 4, mu 0.1). Residual = the FluidProblem loss
  L_nav + 20 L_bound + 0.1 (mean a)^2 + 0.1 (mean p)^2 (mean squared momentum residual on the
  flow faces plus the weighted boundary mismatch and the gauge terms; 0 at the exact solution).
* Cloth, backward Euler step from the flat rest state, dt = 1, g = -z, two pins (the ends of the
  first column), the paper's materials (stretch, shear, bend) = (1000,10,0.01), (1000,1000,10),
  (1000,10,1000). The loss is an energy (can be negative); residual = RMS of its gradient
  relative to the RMS at the start (a = 0).

Methods (each fed what it needs, all from the same start):
* metamizer: metaphys.optim.fast (same steps as the shipped module to ~1e-6) on the problem as the
  paper runs it (Burgers: the pseudo-gradient with detached Laplacian neighbours; NS and cloth:
  the true gradient). 1 iteration = 1 loss+gradient evaluation + 1 network call.
* newton_krylov: scipy.optimize.newton_krylov (LGMRES inner solver, Armijo line search) on a
  square system F(x) = 0: Burgers: the residual r on the free cells; NS: the gradient of the loss
  (the least-squares normal equations); cloth: the gradient of the energy on the free vertices.
  Iterations = Newton iterations (F evaluations in brackets).
* lbfgs: torch.optim.LBFGS (strong Wolfe, history 50) on the loss with its true gradient
  (Burgers: the MSR with the full gradient). Iterations = function+gradient evaluations.
* adam: torch.optim.Adam fed the same gradient as the Metamizer, lr swept (best = lowest
  residual within the sweep budget), best lr rerun with the full budget.
* metamizer+guard: the same with the product's step guard (TimeStepper default:
  a step that grows the loss is retried with step and scale x0.25, up to 3 times).
* Newton-Krylov's inner_maxiter is swept over {20 (scipy default), 100} (lowest residual).

Loop: metaphys.optim.solve.iterate (paper-faithful: no guard; divergence = residual > 1e10 x its
start, the residual being the MSR, or the gradient RMS for cloth).

Runs stop at their cap or once the residual is <= 1e-24 (below the last threshold).

Timing: torch loops and L-BFGS stamp the wall/CPU clock after every evaluation (the residual is a
by-product of the evaluation). Newton-Krylov: a recording run with a callback (not timed) finds
the first Newton iteration k* at or below each threshold, then a fresh unrecorded run with
maxiter = k* is timed (median of repeats).
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


THRESHOLDS = (1e-10, 1e-20)
STOP = 1e-24  # runs stop once the residual is this far below the last threshold (or at their cap)
F64 = torch.float64


class _Reached(Exception):
    pass


# --------------------------------------------------------------------------------------------
# problems
# --------------------------------------------------------------------------------------------
def make_problems(size: int, quick: bool):
    """(label, kind, make) triples; make(tg=...) builds a fresh problem (tg: true gradient)."""
    from metaphys.eval import cases
    if quick:  # one case per PDE
        return [p for p in make_problems(size, False) if p[0] in ("Burgers mu=0.3", "NS cylinder Re=200",
                                                                  "cloth (1000,10,0.01)")]
    out = []
    for mu in (0.3, 1.0):
        out.append((f"Burgers mu={mu:g}", "burgers", lambda mu=mu, tg=False: _burgers(size, mu, tg)))
    for re, rho, mu in ((10, 1.0, 0.5), (200, 4.0, 0.1)):
        out.append((f"NS cylinder Re={re}", "fluid", lambda rho=rho, mu=mu, tg=False: cases.fluid_cylinder(size, rho, mu)))
    for key, label in (("a_1000_10_0.01", "(1000,10,0.01)"), ("b_1000_1000_10", "(1000,1000,10)"),
                       ("c_1000_10_1000", "(1000,10,1000)")):
        out.append((f"cloth {label}", "cloth", lambda key=key, tg=False: cases.cloth_hanging(size, key)))
    return out


def _burgers(size, mu, true_grad):
    from metaphys.eval import cases
    p = cases.burgers_random(size, mu)
    p.true_grad = bool(true_grad)
    return p


def free_mask(kind, problem):
    """Bool [N,C,H,W] of the unknowns that are really free (the NK system's variables)."""
    shape = problem.shape
    if kind == "burgers":
        return (problem.fields["mask"] == 0).expand(shape).clone()
    if kind == "cloth":
        return (problem.fields["pin_w"] != 1).expand(shape).clone()
    return torch.ones(shape, dtype=torch.bool)


def burgers_residual(problem, v):
    """The Burgers residual field r [N,2,H,W] (as in the BurgersProblem twin)."""
    from metaphys.physics import stencils
    fl = problem.fields
    m, bc = fl["mask"], fl["bc"]
    vt = m * bc + (1 - m) * v
    ux, uy = vt[:, 0:1], vt[:, 1:2]
    adv = ux * stencils.dx_c(vt, periodic=True) + uy * stencils.dy_c(vt, periodic=True)
    lap = stencils.laplacian(vt, problem.stencil, periodic=True)
    return (vt - fl["v_old"]) / fl["dt"].view(-1, 1, 1, 1) + adv - fl["mu"].view(-1, 1, 1, 1) * lap


class Metric:
    """The reported residual of a PDE from (loss, grad) or from u."""

    def __init__(self, kind, problem):
        self.kind, self.problem = kind, problem
        self.start = None
        u0 = problem.initial_guess()
        loss, grad = problem.loss_and_grad(u0)
        self.start = self.raw(loss, grad)

    def raw(self, loss, grad):
        if self.kind == "cloth":
            return float(grad.flatten(1).norm(dim=1)[0]) / math.sqrt(grad[0].numel())
        return float(loss[0])

    def __call__(self, loss, grad):
        v = self.raw(loss, grad)
        return v / self.start if self.kind == "cloth" else v

    def of(self, u):
        return self(*self.problem.loss_and_grad(u))


# --------------------------------------------------------------------------------------------
# runners
# --------------------------------------------------------------------------------------------
def run_loop(problem, metric, optimizer, iterations, repeats, guard=False):
    from metaphys.optim.solve import DivergenceError
    runs = []
    # iterate's tol acts on the problem's residual: MSR, or the absolute gradient RMS for cloth
    tol = STOP * (metric.start if metric.kind == "cloth" else 1.0)
    for _ in range(repeats):
        try:
            hist, wall, cpu, u = common.run_iterations(problem, optimizer, iterations, guard=guard, tol=tol)
        except DivergenceError as exc:
            return {"diverged": str(exc).split(";")[0]}
        runs.append((hist, wall, cpu, u))
    hist = runs[-1][0]
    if metric.kind == "cloth":
        hist = [h / metric.start for h in hist]  # iterate records the gradient RMS (residual_from)
    n = min(len(r[1]) for r in runs)
    wall = [common.median(r[1][i] for r in runs) for i in range(n)]
    cpu = [common.median(r[2][i] for r in runs) for i in range(n)]
    final = metric.of(runs[-1][3])
    return {"r": hist[:n], "t": wall, "cpu": cpu, "it": list(range(n)), "final": final, "iters": n - 1,
            "per_it": wall[-1] / max(1, n - 1), "unit": "iteration"}


def run_lbfgs(make_true, metric, max_evals, repeats, history=50):
    runs = []
    for _ in range(repeats):
        problem = make_true()
        u = problem.initial_guess().clone().requires_grad_(True)
        opt = torch.optim.LBFGS([u], lr=1.0, max_iter=max_evals, max_eval=max_evals, history_size=history,
                                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
        hist, wall, cpu = [metric.of(problem.initial_guess())], [0.0], [0.0]
        t0c = time.process_time()
        t0 = time.perf_counter()

        def closure():
            if hist[-1] <= STOP:
                raise _Reached()
            opt.zero_grad()
            loss = problem.loss(u).sum()
            loss.backward()
            with torch.no_grad():
                hist.append(metric(loss.detach().view(1), u.grad))
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - t0c)
            return loss

        try:
            opt.step(closure)
        except _Reached:
            pass
        except RuntimeError as exc:  # line search failures on non-finite values
            return {"diverged": str(exc)[:80]}
        runs.append((hist, wall, cpu, problem.impose(u.detach())))
    n = min(len(r[0]) for r in runs)
    wall = [common.median(r[1][i] for r in runs) for i in range(n)]
    cpu = [common.median(r[2][i] for r in runs) for i in range(n)]
    hist = runs[-1][0][:n]
    final = metric.of(runs[-1][3])
    return {"r": hist, "t": wall, "cpu": cpu, "it": list(range(n)), "final": final, "iters": n - 1,
            "per_it": wall[-1] / max(1, n - 1), "unit": "evaluation"}


def run_newton_krylov(kind, problem, metric, maxiter, repeats, inner=20, timing=True):
    from scipy.optimize import NoConvergence, newton_krylov
    free = free_mask(kind, problem)
    u0 = problem.initial_guess()
    x0 = u0[free].numpy().copy()
    evals = [0]

    def to_u(x):
        u = u0.clone()
        u[free] = torch.as_tensor(x, dtype=F64)
        return problem.impose(u)

    def F(x):
        evals[0] += 1
        u = to_u(x)
        if kind == "burgers":
            return burgers_residual(problem, u)[free].numpy()
        return problem.loss_and_grad(u)[1][free].numpy()

    def solve(k, callback=None):
        try:
            return newton_krylov(F, x0, method="lgmres", maxiter=k, f_tol=1e-300, f_rtol=0.0, x_tol=0.0,
                                 x_rtol=0.0, line_search="armijo", callback=callback, inner_maxiter=inner)
        except NoConvergence as exc:
            return np.asarray(exc.args[0])
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            raise RuntimeError(f"newton_krylov failed: {exc}") from exc

    hist, evs = [metric.of(u0)], [0]

    def cb(x, f):
        hist.append(metric.of(to_u(x)))
        evs.append(evals[0])
        if hist[-1] <= STOP:
            raise _Reached()

    try:
        with np.errstate(all="ignore"):
            solve(maxiter, cb)
    except _Reached:
        pass
    except RuntimeError as exc:
        return {"diverged": str(exc)[:80]}
    out = {"r": hist, "it": list(range(len(hist))), "evals": evs, "iters": len(hist) - 1, "unit": "Newton iteration",
           "final": hist[-1], "crossings": {}}
    if not timing:
        return out
    for th in THRESHOLDS:
        k = common.first_below(hist, th)
        if k is None:
            continue
        with np.errstate(all="ignore"):
            w, c, x = common.timed(lambda: solve(k), repeats)
        out["crossings"][th] = (k, w, c, metric.of(to_u(x)))
    # time curve from prefix runs
    ks = sorted({int(round(v)) for v in np.geomspace(1, max(1, len(hist) - 1), 6)})
    tc, rc = [0.0], [hist[0]]
    for k in ks:
        with np.errstate(all="ignore"):
            w, _, x = common.timed(lambda: solve(k), 1)
        tc.append(w)
        rc.append(metric.of(to_u(x)))
    out["t_curve"], out["r_curve"] = tc, rc
    out["per_it"] = tc[-1] / max(1, ks[-1])
    return out


def crossing(r, th):
    """(iterations, wall, cpu) to reach th, or None."""
    if "diverged" in r:
        return None
    if "crossings" in r:
        c = r["crossings"].get(th)
        return None if c is None else (c[0], c[1], c[2])
    k = common.first_below(r["r"], th)
    return None if k is None else (k, r["t"][k], r["cpu"][k])


# --------------------------------------------------------------------------------------------
def bench(label, kind, make, fast, args, caps, monitor):
    from metaphys.optim.baselines import TorchOptimizer
    from metaphys.optim.metamizer import Metamizer
    problem = make()
    metric = Metric(kind, problem)
    repeats = args.repeats or (1 if args.quick else 2)
    res = {}
    print(f"[nonlinear] {label}: start residual {metric.of(problem.initial_guess()):.3e}", flush=True)
    res["metamizer"] = run_loop(make(), metric, Metamizer(fast), caps["metamizer"], repeats)
    monitor.sample()
    res["metamizer+guard"] = run_loop(make(), metric, Metamizer(fast), caps["metamizer"], repeats, guard=True)
    monitor.sample()
    nk = []
    for inner in ((20,) if args.quick else (20, 100)):  # LGMRES inner iterations: scipy's default and a deeper solve
        r = run_newton_krylov(kind, make(), metric, caps["nk"], repeats, inner, timing=False)
        score = float("inf") if "diverged" in r else min(r["r"])
        nk.append((score, inner))
    best = min(nk)[1]
    res["newton_krylov"] = run_newton_krylov(kind, make(), metric, caps["nk"], repeats, best)
    res["newton_krylov"]["inner"], res["newton_krylov"]["nk_sweep"] = best, nk
    monitor.sample()
    res["lbfgs"] = run_lbfgs(lambda: make(tg=True), metric, caps["lbfgs"], repeats)
    monitor.sample()
    sweep = []
    for lr in ((1e-3, 1e-2) if args.quick else (1e-4, 1e-3, 1e-2, 1e-1)):
        r = run_loop(make(), metric, TorchOptimizer("adam", lr), caps["sweep"], 1)
        sweep.append((min(r["r"]) if "r" in r else float("inf"), lr))
    best = min(sweep)[1]
    r = run_loop(make(), metric, TorchOptimizer("adam", best), caps["adam"], 1)
    r["lr"], r["sweep"] = best, sweep
    res["adam"] = r
    monitor.sample()
    for name, r in res.items():
        print(f"  {name}: {r.get('iters')} {r.get('unit', '')}s, final {r.get('final', float('nan')):.2e}"
              f"{' DIVERGED ' + r['diverged'] if 'diverged' in r else ''}", flush=True)
    return res, metric


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    out = common.setup(args)
    monitor = common.LoadMonitor()
    machine = common.machine_info()
    model, wdesc = common.load_weights(args.weights)
    fast = common.fast_model(model)
    size = 32 if args.quick else 100
    caps = ({"metamizer": 40, "nk": 5, "lbfgs": 40, "sweep": 10, "adam": 40} if args.quick else
            {"metamizer": 300, "nk": 40, "lbfgs": 1500, "sweep": 200, "adam": 2000})
    rows, sections = [], []
    for label, kind, make in make_problems(size, args.quick):
        res, metric = bench(label, kind, make, fast, args, caps, monitor)
        slug = label.replace(" ", "_").replace("=", "").replace("(", "").replace(")", "").replace(",", "_")
        png = f"nonlinear_{slug}.png"
        curves = {}
        for name, r in res.items():
            if "diverged" in r:
                continue
            if "t_curve" in r:
                curves[name] = {"t": r["t_curve"], "t_r": r["r_curve"], "r": r["r"], "it": r["evals"], "marker": "o"}
            else:
                curves[name] = {"t": r["t"], "r": r["r"]}
        ylabel = "gradient RMS / start" if kind == "cloth" else "residual (MSR / loss)"
        if not args.quick or not sections:  # the quick run draws one plot (plumbing check)
            common.plot_curves(os.path.join(out, png), f"{label}, {size}x{size}: one implicit step", curves,
                               THRESHOLDS, ylabel=ylabel,
                               xlabel_iter="iterations (Newton-Krylov: F evaluations; L-BFGS: evaluations)")
        table_rows = []
        for name, r in res.items():
            if "diverged" in r:
                table_rows.append([name, "", "diverged: " + r["diverged"], "—", "—", "—", "—", "—", "—"])
                rows.append([label, name, "diverged", "—", "—", "—", "—"])
                continue
            cs = [crossing(r, th) for th in THRESHOLDS]
            its = []
            for c in cs:
                if c is None:
                    its.append("—")
                elif "evals" in r:
                    its.append(f"{c[0]} ({r['evals'][c[0]]} F)")
                else:
                    its.append(str(c[0]))
            ts = [f"{common.fmt_time(c[1])} ({common.fmt_time(c[2])})" if c else "—" for c in cs]
            extra = f"lr {r['lr']:g}" if "lr" in r else (f"inner {r['inner']}" if "inner" in r else "")
            table_rows.append([name, r["unit"], extra, *its, *ts, common.fmt(r["final"]), r["iters"]])
            rows.append([label, name, its[0], ts[0], its[1], ts[1], common.fmt(r["final"])])
        sections.append("\n".join([
            f"### {label}", "",
            f"Start residual {common.fmt(metric.of(make().initial_guess()))}"
            f"{' (relative: 1 = gradient RMS ' + common.fmt(metric.start) + ')' if kind == 'cloth' else ''}.", "",
            common.md_table(["method", "unit", "", "its→1e-10", "its→1e-20", "time→1e-10 wall (CPU)",
                             "time→1e-20 wall (CPU)", "final residual", "its run"], table_rows),
            (f"Adam lr sweep ({caps['sweep']} its; lowest residual): " +
             ", ".join(f"{lr:g}→{common.fmt(v)}" for v, lr in sorted(res['adam'].get('sweep', []), key=lambda t: t[1])))
            if "sweep" in res["adam"] else "",
            ("Newton-Krylov inner_maxiter sweep (lowest residual): " +
             ", ".join(f"{i}→{common.fmt(v)}" for v, i in res["newton_krylov"]["nk_sweep"]))
            if "nk_sweep" in res.get("newton_krylov", {}) else "",
            "", f"![{label}]({png})", ""]))
    load = monitor.report()
    summary = common.md_table(["problem", "method", "its→1e-10", "time→1e-10 wall (CPU)", "its→1e-20",
                               "time→1e-20 wall (CPU)", "final residual"], rows)
    md = ["# One implicit step of nonlinear PDEs: Metamizer vs Newton-Krylov vs L-BFGS vs Adam", "",
          common.environment_md(machine, load, wdesc, args), "",
          "## Setup and definitions", "", __doc__.split("\n", 2)[2].strip(), "",
          f"Caps: Metamizer {caps['metamizer']} iterations, Newton-Krylov {caps['nk']} Newton iterations, "
          f"L-BFGS {caps['lbfgs']} evaluations, Adam {caps['adam']} iterations. '—' = not reached within the cap "
          "(the final residual shows where the method stalled).", "",
          "## Summary", "", summary, "", "## Per problem", ""] + sections
    common.write(os.path.join(out, "nonlinear.md"), "\n".join(md))
    print("\n## Summary\n")
    print(summary)
    print(f"wrote {os.path.join(out, 'nonlinear.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
