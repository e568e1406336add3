"""`metaphys eval`: the held-out evaluation of a set of weights (paper layout), written to
benchmarks/results/eval.md with a convergence plot. Targets of the shipped weights are printed
with PASS/MISS, never asserted (they are the training's goals, not unit tests)."""
from __future__ import annotations

import json
import math
import os
import platform
import time
from typing import Dict, List, Optional

import torch

from metaphys.eval import cases
from metaphys.io.atomic import atomic_path, atomic_write_text
from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.metamizer import Metamizer
from metaphys.optim.solve import DivergenceError, iterate
from metaphys.sims.common import fastest_forward

FLOOR = 1e-300


def _geo(t: torch.Tensor) -> float:
    return float(torch.exp(torch.log(t.clamp_min(FLOOR)).mean()))


def stationary(opt, problem, iterations: int, accelerate: int = 0) -> Dict:
    u = problem.initial_guess()
    t = time.perf_counter()
    try:
        res = iterate(problem, opt, u, opt.init_state(tuple(u.shape)), iterations=iterations, accelerate=accelerate)
    except DivergenceError as exc:
        return {"diverged": str(exc)}
    secs = time.perf_counter() - t
    hist = torch.stack([r for r in res.residuals])
    curve = [_geo(row) for row in hist]
    out = {"curve": curve, "seconds": secs, "it_per_s": iterations / secs}
    for k in (10, 25, 50, 100, 200, 500):
        if k < len(curve):
            out[f"it{k}"] = curve[k]
    for thr in (1e-10, 1e-20, 1e-30):
        hit = [k for k, v in enumerate(curve) if v <= thr]
        out[f"to{int(-math.log10(thr))}"] = hit[0] if hit else None
    return out


def rollout(opt, problem, steps: int, ipt: int, hook=None, metric=None, line_search: bool = False,
            accelerate: int = 0) -> Dict:
    u = problem.initial_guess()
    state = opt.init_state(tuple(u.shape))
    per_step: List[float] = []
    extra: Dict[str, List[float]] = {}
    t = time.perf_counter()
    try:
        for k in range(steps):
            if hook is not None:
                hook(problem, k + 1)
            res = iterate(problem, opt, u, state, iterations=ipt, line_search=line_search, accelerate=accelerate)
            state = res.state
            per_step.append(float(res.residual.max()))
            if metric is not None:
                for key, val in metric(problem, res).items():
                    extra.setdefault(key, []).append(val)
            u = problem.advance(res.u)
            if not bool(torch.isfinite(u).all()):
                raise DivergenceError(f"non-finite state at step {k + 1}")
    except DivergenceError as exc:
        return {"diverged": str(exc)}
    secs = time.perf_counter() - t
    out = {"mean": sum(per_step) / len(per_step), "it_per_s": steps * ipt / secs, "per_step": per_step}
    for key, vals in extra.items():
        out[key] = vals
    return out


def burgers_reference(size: int, mu: float, steps: int, log=print) -> Dict:
    """Newton on r = 0 along the Burgers trajectory (each step from the previous converged one).

    ``solutions[k]`` is the converged step k; ``solvable`` the number of leading steps whose
    backward-Euler equations have a root Newton reaches. Beyond it the eval case has no exact
    solution near the previous state (measured on the 64^2 case: a fold, the continuation in dt
    ends between dt = 0.95 and 0.96 at step 3), so no iteration can drive its MSR to round-off."""
    from metaphys.optim.newton_residual import ResidualNewtonSolver
    problem = cases.burgers_random(size, mu)
    newton = ResidualNewtonSolver()
    u = problem.initial_guess()
    solutions, msr, why = [], [], ""
    for _ in range(steps):
        out = newton.solve(problem, u)
        if not out.converged:
            msr.append(out.residual)
            why = out.reason
            break
        solutions.append(out.u)
        msr.append(out.residual)
        u = problem.advance(out.u)
    log(f"burgers mu={mu} reference: {len(solutions)}/{steps} steps have a root" + (f" ({why})" if why else ""))
    return {"solutions": solutions, "solvable": len(solutions), "msr": msr, "reason": why}


def _reference_metric(solutions):
    """Per step, the max abs difference to the reference solution (NaN past the solvable steps)."""
    calls = {"k": 0}

    def metric(problem, res):
        k = calls["k"]
        calls["k"] += 1
        if k >= len(solutions):
            return {"err_ref": float("nan")}
        return {"err_ref": float((res.u - solutions[k]).abs().max())}

    return metric


def with_reference(out: Dict, reference: Dict) -> Dict:
    """Add the means over the steps whose equations have a root (what the targets judge)."""
    if "diverged" in out:
        return out
    k = reference["solvable"]
    out["solvable"] = k
    out["steps"] = len(out["per_step"])
    out["mean_solvable"] = sum(out["per_step"][:k]) / k if k else None
    out["err_ref_max"] = max(out["err_ref"][:k]) if k else None
    return out


def _fluid_metric(problem, res):
    from metaphys.physics.fluid import fluid_metrics
    m = fluid_metrics(problem, res.u)
    return {"L_p": float(m["L_p"].max()), "L_d": float(m["L_d"].max())}


def _cloth_metric(problem, res):
    g0 = float(res.residuals[0].max())
    g1 = float(res.residual.max())
    return {"rel_grad": g1 / max(g0, 1e-300), "stretch": float(problem.max_stretch(problem.state(res.u)[0]).max())}


def run_eval(model, quick: bool = False, only=None, log=print) -> Dict:
    """Plain rows judge the network alone (the paper's iteration, what training improves); ``_acc``
    rows add the subspace acceleration the product runs by default (optim/accelerate.py)."""
    opt = Metamizer(model)
    smoke_opt = None  # built on first use: freezing the fast module costs ~0.3 s
    acc = DEFAULT_MEMORY
    torch.set_num_threads(1)
    s = (lambda full, q: q if quick else full)
    results: Dict[str, Dict] = {}

    def want(name):
        # a prefix that ends where a number would go on: "laplace100" is not "laplace1000"
        return only is None or any(name.startswith(o) and not name[len(o):len(o) + 1].isdigit() for o in only)

    for size in s([32, 64, 100, 256, 400, 1000], [32]):  # the size sweep (trained at <= 128^2)
        if want(f"laplace{size}"):
            its = s(500 if size < 256 else 300, 60)
            results[f"laplace{size}"] = stationary(opt, cases.laplace_random(size), its)
            results[f"laplace{size}_acc"] = stationary(opt, cases.laplace_random(size), its, accelerate=acc)
            log(f"laplace{size}: {results[f'laplace{size}'].get('it50', 'diverged')}, "
                f"accelerated {results[f'laplace{size}_acc'].get('it50', 'diverged')}")
    if want("laplace_bilinear"):
        results["laplace_bilinear100"] = stationary(opt, cases.laplace_bilinear(s(100, 32)), s(200, 60))
    if want("poisson"):
        results["poisson100"] = stationary(opt, cases.poisson_charges(s(100, 32)), s(200, 60))
        results["poisson100_acc"] = stationary(opt, cases.poisson_charges(s(100, 32)), s(200, 60), accelerate=acc)
    n = s(64, 32)
    steps = s(10, 3)
    ipts = s([1, 5, 20, 100], [1, 5])
    for D in s([0.1, 0.5, 2.0, 10.0], [0.1]):
        for ipt in ipts:
            if want("diffusion"):
                results[f"diffusion_D{D}_ipt{ipt}"] = rollout(opt, cases.diffusion_rotating(n, D), steps, ipt)
            if want("diffusion"):  # the product's robust iteration: subspace acceleration
                results[f"diffusion_D{D}_ipt{ipt}_acc"] = rollout(opt, cases.diffusion_rotating(n, D), steps, ipt,
                                                                  accelerate=acc)
    for c in s([0.5, 1.0, 2.0], [1.0]):
        for ipt in ipts:
            if want("wave"):
                p, hook = cases.wave_emitters(n, c)
                results[f"wave_c{c}_ipt{ipt}"] = rollout(opt, p, steps, ipt, hook=hook)
                p, hook = cases.wave_emitters(n, c)
                results[f"wave_c{c}_ipt{ipt}_acc"] = rollout(opt, p, steps, ipt, hook=hook, accelerate=acc)
    for mu in s([0.3, 1.0], [0.3]):
        # the converged reference says on which steps the equations have a root at all
        ref = burgers_reference(n, mu, steps, log=log) if want("burgers") else None
        for ipt in ipts:
            if want("burgers"):
                for suffix, memory in (("", 0), ("_acc", acc)):
                    out = rollout(opt, cases.burgers_random(n, mu), steps, ipt, accelerate=memory,
                                  metric=_reference_metric(ref["solutions"]))
                    results[f"burgers_mu{mu}_ipt{ipt}{suffix}"] = with_reference(out, ref)
    for rho, mu in s([(1.0, 1.0), (1.0, 0.1), (4.0, 0.02)], [(1.0, 0.1)]):
        re = rho * 0.5 * (n / 10) / mu
        for ipt in ipts:
            if want("fluid"):
                results[f"fluid_Re{re:.0f}_ipt{ipt}"] = rollout(opt, cases.fluid_cylinder(n, rho, mu), steps, ipt,
                                                                metric=_fluid_metric)
                results[f"fluid_Re{re:.0f}_ipt{ipt}_acc"] = rollout(opt, cases.fluid_cylinder(n, rho, mu), steps,
                                                                    ipt, metric=_fluid_metric, accelerate=acc)
                # what SmokeSim runs: the same weights as the frozen fast module (steps equal to ~1e-6,
                # which over 20 it/step moves L_d by up to ~2x near 1e-8: the target is judged on both)
                smoke_opt = smoke_opt or fastest_forward(opt, "cpu")
                results[f"fluid_Re{re:.0f}_ipt{ipt}_acc_smoke"] = rollout(
                    smoke_opt, cases.fluid_cylinder(n, rho, mu), steps, ipt, metric=_fluid_metric, accelerate=acc)
    for mat in cases.CLOTH_MATERIALS:
        for ipt in s([10, 30], [10]):
            if want("cloth"):
                results[f"cloth_{mat}_ipt{ipt}"] = rollout(opt, cases.cloth_hanging(s(32, 16), mat), s(100, 5),
                                                           ipt, metric=_cloth_metric)
    log("eval done")
    return results


TARGETS = [
    ("laplace100", "it50", 1e-30, "Laplace 100², MSR by iteration 50"),
    # field "to20": the first iteration with MSR <= 1e-20, against the iteration budget
    ("laplace400", "to20", 150, "Laplace 400², MSR ≤ 1e-20 by iteration 150"),
    ("laplace1000", "to20", 300, "Laplace 1000², MSR ≤ 1e-20 by iteration 300"),
    ("poisson100", "it100", 1e-25, "Poisson (charges) 100², MSR by iteration 100"),
    # Burgers: over the steps whose equations have a root (burgers_reference); the mean over all
    # steps is in the table, but past a fold no solver can reach round-off
    ("burgers_mu0.3_ipt5", "mean_solvable", 8.5e-6, "Burgers μ=0.3, 5 it/step, steps with a root (paper 8.5e-6)"),
    ("burgers_mu0.3_ipt20", "mean_solvable", 2.5e-10, "Burgers μ=0.3, 20 it/step, steps with a root (paper 2.5e-10)"),
    ("burgers_mu0.3_ipt100", "mean_solvable", 5e-32, "Burgers μ=0.3, 100 it/step, steps with a root (paper 5e-32)"),
    ("diffusion_D0.1_ipt20", "mean", 5.6e-11, "advection-diffusion D=0.1, 20 it/step (paper 5.6e-11)"),
    ("wave_c0.5_ipt100", "mean", 1e-28, "wave c=0.5, 100 it/step"),
    ("wave_c1.0_ipt100", "mean", 1e-28, "wave c=1, 100 it/step"),
    ("wave_c2.0_ipt100", "mean", 1e-28, "wave c=2, 100 it/step"),
    ("fluid_Re32_ipt20", "L_d", 1e-8, "Navier-Stokes Re 32, 20 it/step, L_d (paper 9.5e-9)"),
]
# the same targets with the product's default iteration (subspace acceleration)
TARGETS += [(name + "_acc", key, thr, label + ", accelerated") for name, key, thr, label in TARGETS]
TARGETS += [("fluid_Re32_ipt20_acc_smoke", "L_d", 1e-8,
             "Navier-Stokes Re 32, 20 it/step, L_d, accelerated, fast forward module (what SmokeSim runs)")]


def _fmt(v):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    return f"{v:.1e}"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, sysctl on macOS), else platform's best guess."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import subprocess
        r = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    """The machine this report was measured on, read at run time (timings mean nothing without it)."""
    text = (f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} logical cores, {platform.system()} "
            f"{platform.release()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)")
    if hasattr(os, "getloadavg"):  # other work on the machine (a training run...) slows the timings
        text += f", load average {os.getloadavg()[0]:.1f} at the end of the run"
    return text


def write_report(results: Dict, path: str, weights_desc: str, wall: Optional[float]) -> List[str]:
    timing = "" if wall is None else f"Wall time {wall:.0f} s. "
    lines = [f"# Evaluation of the Metamizer weights", "",
             f"Weights: {weights_desc}. Machine: {machine_description()}. "
             f"{timing}Held-out seeds disjoint from training.", "",
             "## Stationary problems (geometric-mean MSR after k iterations; iterations to reach a level)", "",
             "| case | it10 | it25 | it50 | it100 | it200 | it500 | →1e-10 | →1e-20 | →1e-30 | it/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "curve" not in r and not name.startswith(("laplace", "poisson")):
            continue
        if "diverged" in r:
            lines.append(f"| {name} | diverged: {r['diverged']} |")
            continue
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(k)) for k in
                                                  ("it10", "it25", "it50", "it100", "it200", "it500", "to10", "to20",
                                                   "to30")) + f" | {r['it_per_s']:.0f} |")
    lines += ["", "## Time-dependent problems (mean residual at the end of each step; Table-1 layout)", "",
              "| case | it/step | mean MSR (loss) | extra | it/s |", "|---|---|---|---|---|"]
    for name, r in results.items():
        if "curve" in r or name.startswith(("laplace", "poisson")):
            continue
        ipt = name.rsplit("_ipt", 1)[-1].split("_")[0]
        if "diverged" in r:
            lines.append(f"| {name} | {ipt} | diverged: {r['diverged']} | | |")
            continue
        extra = ""
        if "L_p" in r:
            extra = f"L_p {sum(r['L_p']) / len(r['L_p']):.1e}, L_d {sum(r['L_d']) / len(r['L_d']):.1e}"
        if "solvable" in r:
            extra = (f"equations have a root on the first {r['solvable']} of {r['steps']} steps (Newton); "
                     f"over them: mean MSR {_fmt(r['mean_solvable'])}, max err vs Newton {_fmt(r['err_ref_max'])}")
        if "rel_grad" in r:
            rg = torch.tensor(r["rel_grad"])
            extra = (f"rel. grad geomean {_geo(rg):.2g}, worst {float(rg.max()):.2g}, "
                     f"max stretch {max(r['stretch']):.3f}")
        lines.append(f"| {name} | {ipt} | {r['mean']:.1e} | {extra} | {r['it_per_s']:.0f} |")
    lines += ["", "## Targets for the shipped weights", "", "| target | value | goal | status |", "|---|---|---|---|"]
    for key, field, goal, label in TARGETS:
        r = results.get(key)
        if r is None:
            continue
        v = None if "diverged" in r else r.get(field)
        if isinstance(v, list):  # per-step metrics (fluid L_d): their mean, as the table shows
            v = sum(v) / len(v)
        budget = field.startswith("to")  # goal = an iteration budget, value = the iteration it was reached
        if "diverged" in r:
            status = "MISS (diverged)"
        elif v is None and budget:
            status = f"MISS (not reached in {len(r.get('curve', [])) - 1} iterations)"
        elif v is None:
            status = "not measured (run too short)"
        elif budget:
            status = "PASS" if v <= goal else f"MISS (iteration {v})"
        else:
            status = "PASS" if v <= goal else f"MISS ({v / goal:.1e}x)"
        shown = (f"iteration {v}" if budget and v is not None else _fmt(v))
        lines.append(f"| {label} | {shown} | {f'by {goal}' if budget else f'≤ {goal:.1e}'} | {status} |")
    diverged = [k for k, r in results.items() if "diverged" in r]
    lines += ["", f"Diverged cases: {', '.join(diverged) if diverged else 'none'}.", ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, "\n".join(lines))
    # every number behind the report (curves included), so targets can be re-judged without a rerun
    atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps(results, default=str))
    _plot(results, os.path.splitext(path)[0] + ".png")
    return lines


def _plot(results: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, r in results.items():
        if "curve" in r:
            ax.semilogy([max(v, 1e-34) for v in r["curve"]], label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("MSR (geometric mean)")
    ax.set_title("Metamizer convergence on held-out stationary problems")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def load_any(path: str):
    """TorchScript weights (.pt with metadata) or a training snapshot/checkpoint."""
    from metaphys.optim.weights import load_torchscript, model_from_snapshot
    try:
        return load_torchscript(path), path
    except Exception:
        return model_from_snapshot(path), path


class EvalInputError(ValueError):
    """A bad ``metaphys eval`` argument (where the report goes, which partial results to merge)."""


def report_path(out: str) -> str:
    """Where the report goes, checked before an hour of evaluation: a folder (existing, or named with a
    trailing separator) gets eval.md inside; a file's folder must exist or be creatable and be writable."""
    if out.endswith(os.sep) or os.path.isdir(out):
        out = os.path.join(out, "eval.md")
    if not out.endswith(".md"):
        raise EvalInputError(f"--out {out!r}: expected a markdown report path ending in .md (its .json and .png "
                             "are written beside it) or a folder")
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise EvalInputError(f"--out {out!r}: cannot create its folder {folder!r}: {exc}") from exc
    if not os.access(folder, os.W_OK):
        raise EvalInputError(f"--out {out!r}: the folder {folder!r} is not writable")
    return out


def merge_parts(paths: List[str]) -> Dict:
    """The results of partial runs (their report .json files) as one run's, in the order given; a case in
    two parts is refused (two runs of it: which one would the report show?)."""
    merged: Dict[str, Dict] = {}
    for p in paths:
        try:
            with open(p, encoding="utf-8") as fh:
                part = json.load(fh)
        except (OSError, ValueError) as exc:
            raise EvalInputError(f"--merge: cannot read the partial results {p!r}: {exc}") from exc
        if not isinstance(part, dict) or not all(isinstance(v, dict) for v in part.values()):
            raise EvalInputError(f"--merge: {p!r} is not the .json of a `metaphys eval` report")
        twice = sorted(set(part) & set(merged))
        if twice:
            raise EvalInputError(f"--merge: {p!r} repeats cases of an earlier part: {', '.join(twice)}")
        merged.update(part)
    return merged


def main(args) -> int:
    from metaphys.optim.weights import default_weights_path, sha256_of
    path = args.weights or default_weights_path()
    out = report_path(args.out)
    if not os.path.isfile(path):
        raise EvalInputError(f"--weights {path!r}: no such file (TorchScript weights or a training snapshot)")
    desc = f"{path} (sha256 {sha256_of(path)[:16]}…)"
    if getattr(args, "merge", None):
        results = merge_parts(args.merge)
        # the parts' own wall times are in their reports; the merged one records where it came from
        # each part by its cases (the files are often all eval.json in separate folders)
        parts = []
        for p in args.merge:
            with open(p, encoding="utf-8") as fh:
                names = list(json.load(fh))
            parts.append(f"{names[0]} .. {names[-1]}, {len(names)} rows" if names else f"{p}: empty")
        desc += f", merged from {len(args.merge)} partial runs ({'; '.join(parts)})"
        lines = write_report(results, out, desc, None)
    else:
        model, _ = load_any(path)
        t = time.time()
        only = args.only.split(",") if args.only else None
        results = run_eval(model, quick=args.quick, only=only)
        lines = write_report(results, out, desc, time.time() - t)
    print("\n".join(lines))
    return 0
