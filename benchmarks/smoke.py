"""Smoke: metaphys SmokeSim vs PhiFlow, ms per frame and density error, at 64^2, 128^2, 256^2.

Per grid size n, all in one process (PhiFlow in a subprocess with its own interpreter), the default
plume in physical units (a 1 m box, 24 fps; see benchmarks/smoke_units.py for its shape):

* metaphys, default settings: fluid 20 Metamizer it/step (frozen channels_last forward of
  optim/fast.py) with the subspace acceleration (optim/accelerate.py), as many fluid steps per
  frame as keep each step under ``cfl`` = 4 cells, the density carried by the monotone transport.
* metaphys with the plain fluid iteration (``accelerate=0``, the paper's), for comparison.
* metaphys with half the step (``cfl`` 2): how much the time step changes the plume.
* the reference "converged": the default steps with the fluid solved to ``--ref-iterations`` it/step.
* PhiFlow (benchmarks/smoke_phiflow.py; ``--phiflow-python`` must have ``phiflow``): the same
  physical plume, one step per frame, pressure tolerance 1e-3, and its density error against itself
  at tolerance 1e-6.

Errors are relative L2 of the stacked density frames [F, n, n] against the reference. Each size
is stored in ``smoke_raw.json`` (so sizes can run separately) and all stored sizes are rendered
to ``smoke.md`` and ``smoke.png``.

    .venv/bin/python benchmarks/smoke.py --sizes 64 128 --frames 48 24 --phiflow-python /tmp/phienv/bin/python
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: sets the BLAS thread count before numpy loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run_sim(n: int, frames: int, optimizer, **settings) -> dict:
    """Densities [F,n,n], ms per frame, fluid steps and iterations per frame, min density."""
    from metaphys.sims.smoke import SmokeSim
    sim = SmokeSim((n, n), optimizer=optimizer, **{"threads": 1, **settings})
    out, times = [], []
    for _ in range(frames):
        t0 = time.perf_counter()
        sim.step()
        times.append(1e3 * (time.perf_counter() - t0))
        out.append(sim.density.copy())
    return {"density": np.stack(out), "ms": times, "steps": [r.substeps for r in sim.records],
            "iterations": [r.iterations for r in sim.records], "min_density": min(r.min_density for r in sim.records)}


def rel_l2(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-300))


def phiflow(python: str, n: int, frames: int) -> dict:
    if not python:
        return {"error": "no --phiflow-python given"}
    try:
        cp = subprocess.run([python, os.path.join(HERE, "smoke_phiflow.py"), str(n), str(frames)], capture_output=True,
                            text=True, timeout=3600, env=dict(os.environ, OMP_NUM_THREADS="1",
                                                              OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1"))
        return json.loads(cp.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": f"PhiFlow run failed: {exc}: {cp.stderr.strip()[-300:] if 'cp' in locals() else ''}"}


def measure_all(n: int, frames: int, args, optimizer) -> dict:
    """All metaphys runs of one size (errors against the converged reference), then PhiFlow. One thread
    each, and where the sims' automatic thread count is larger (``threads_for_grid``: from 97^2 on),
    the default at that count too."""
    from metaphys.sims.common import threads_for_grid
    entry = {"n": n, "frames": frames, "ref_iterations": args.ref_iterations, "runs": {}}
    stacks = {}
    configs = [("default", {}), ("plain fluid iteration", {"accelerate": 0}), ("cfl 2", {"cfl": 2.0}),
               ("converged", {"iterations_per_step": args.ref_iterations})]
    if threads_for_grid(n, n) > 1:   # the sims' own default there: more than one thread
        configs.insert(1, (f"default, threads auto ({threads_for_grid(n, n)})", {"threads": None}))
    run_sim(n, 2, optimizer)  # warm-up: oneDNN sets up its kernels for a new grid size on first use
    for name, settings in configs:
        r = run_sim(n, frames, optimizer, **settings)
        stacks[name] = r["density"]
        entry["runs"][name] = {"ms_per_frame": float(np.median(r["ms"])), "steps": float(np.mean(r["steps"])),
                               "fluid_iterations": float(np.mean(r["iterations"])), "min_density": r["min_density"]}
        print(f"  {n}^2 {name}: {np.median(r['ms']):.0f} ms/frame, steps/frame {np.mean(r['steps']):.1f}", flush=True)
    for name, run in entry["runs"].items():
        run["rel_l2_vs_converged"] = rel_l2(stacks[name], stacks["converged"])
    entry["phiflow"] = phiflow(args.phiflow_python, n, frames)
    print(f"  {n}^2 PhiFlow: { {k: v for k, v in entry['phiflow'].items() if k != 'cap'} }", flush=True)
    return entry


def render(raw: dict, out: str, machine_md: str) -> None:
    import matplotlib.pyplot as plt
    sizes = sorted(raw, key=int)
    rows = []
    for key in sizes:
        e = raw[key]
        pf = e.get("phiflow", {})
        pf_ms = pf.get("ms_per_frame") or pf.get("ms_per_frame_before_failure")
        for name, r in e["runs"].items():
            ratio = f"{r['ms_per_frame'] / pf_ms:.2f}" if pf_ms else "-"
            rows.append([f"{e['n']}²", e["frames"], f"metaphys: {name}", f"{r['ms_per_frame']:.0f}", ratio,
                         f"{r['steps']:.1f}", f"{r['fluid_iterations']:.0f}", f"{r['rel_l2_vs_converged']:.1e}",
                         f"{r['min_density']:.3g}"])
        if pf.get("ms_per_frame"):
            err = f"{pf['density_rel_l2']:.1e} (vs itself at 1e-6)" if pf.get("density_rel_l2") is not None else \
                "- (its 1e-6 solve diverged)"
            rows.append([f"{e['n']}²", e["frames"], f"PhiFlow {pf.get('version', '?')} (tol 1e-3)", f"{pf_ms:.0f}",
                         "1.00", "1", "-", err, f"{pf['min_density']:.3g}" if "min_density" in pf else "-"])
        elif pf_ms:  # its pressure solve diverged: the frames before it still time a step
            err = " ".join(pf.get("error", "?").strip().splitlines()[-1:]).replace("|", "/")[:120]
            rows.append([f"{e['n']}²", e["frames"], f"PhiFlow {pf.get('version', '?')} (tol 1e-3), "
                         f"{pf['frames_before_failure']} frames before its solve failed: {err}", f"{pf_ms:.0f}",
                         "1.00", "1", "-", "-", "-"])
        else:
            # one table cell: the error's last line (the exception), not its traceback
            err = " ".join(pf.get("error", "?").strip().splitlines()[-1:]).replace("|", "/")[:160]
            rows.append([f"{e['n']}²", e["frames"], "PhiFlow", "-", "-", "-", "-", f"failed: {err}", "-"])
    table = common.md_table(["grid", "frames", "method", "ms/frame (median)", "× PhiFlow", "fluid steps/frame",
                             "fluid it/frame", "rel. L2 vs converged", "min density"], rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [raw[k]["n"] for k in sizes]
    for name in ("default", "converged"):
        pts = [(raw[k]["n"], raw[k]["runs"][name]["ms_per_frame"]) for k in sizes if name in raw[k]["runs"]]
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"metaphys {name}")
    pf_times = {k: raw[k].get("phiflow", {}).get("ms_per_frame") or raw[k].get("phiflow", {}).get(
        "ms_per_frame_before_failure") for k in sizes}
    pts = [(raw[k]["n"], pf_times[k]) for k in sizes if pf_times[k]]
    if pts:
        ax.plot(*zip(*pts), "s--", label="PhiFlow (tol 1e-3)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ns, [f"{n}²" for n in ns])
    ax.set_xlabel("grid")
    ax.set_ylabel("ms per frame (median, 1 thread)")
    ax.set_title("2D smoke plume, time per frame")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "smoke.png"), dpi=110)
    plt.close(fig)
    ref_its = sorted({raw[k]["ref_iterations"] for k in sizes})
    text = ("# Smoke: metaphys vs PhiFlow\n\n"
            "Generated by `benchmarks/smoke.py` (see its docstring for the scenes): the default plume in physical "
            "units (1 m box, 24 fps), metaphys and PhiFlow on the same scene. `converged` = the default fluid steps "
            f"solved to {'/'.join(map(str, ref_its))} Metamizer it/step; `cfl 2` = half the default fluid step. "
            "Errors are relative L2 over all frames' densities. PhiFlow takes one step per frame (its "
            "semi-Lagrangian steps are stable at any step); its error is against itself at pressure tolerance "
            "1e-6.\n\n"
            + table + "\n\n![time per frame](smoke.png)\n\nWhat the runs showed, session by session: "
            "[smoke_notes.md](smoke_notes.md).\n\n" + machine_md)
    common.write(os.path.join(out, "smoke.md"), text)


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--frames", type=int, nargs="+", default=[48],
                   help="frames per size (one value for all, or one per size)")
    p.add_argument("--ref-iterations", type=int, default=100, help="fluid it/step of the converged reference")
    p.add_argument("--phiflow-python", default=os.environ.get("PHIFLOW_PYTHON", ""),
                   help="an interpreter with phiflow installed (never a metaphys dependency)")
    p.add_argument("--phiflow-only", action="store_true", help="rerun only PhiFlow for the sizes (keeps stored runs)")
    p.add_argument("--fresh", action="store_true", help="forget earlier sizes stored in smoke_raw.json")
    args = p.parse_args()
    out = common.setup(args)
    frames = args.frames if len(args.frames) == len(args.sizes) else [args.frames[0]] * len(args.sizes)
    from metaphys.sims.smoke import SmokeSim
    model, weights = common.load_weights(args.weights)
    from metaphys.optim.metamizer import Metamizer
    optimizer = SmokeSim.fastest_optimizer("cpu", Metamizer(model))
    raw_path = os.path.join(out, "smoke_raw.json")
    raw = {} if args.fresh or not os.path.exists(raw_path) else json.load(open(raw_path))
    monitor = common.LoadMonitor()
    for n, f in zip(args.sizes, frames):
        if args.phiflow_only and str(n) in raw:
            raw[str(n)]["phiflow"] = phiflow(args.phiflow_python, n, raw[str(n)]["frames"])
        else:
            raw[str(n)] = measure_all(n, f, args, optimizer)
        monitor.sample()
        common.write(raw_path, json.dumps(raw, indent=1))
    machine_md = common.environment_md(common.machine_info(), monitor.report(), weights, args)
    render(raw, out, machine_md)


if __name__ == "__main__":
    main()
