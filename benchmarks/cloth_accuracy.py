"""Cloth accuracy against a converged reference of the same equations (issue #12).

For each scene and grid size, three runs of the same ClothSim scene:
  reference   solver "newton", relative tolerance 1e-10 (the converged answer)
  default     the product default: solver "auto" (30 Metamizer iterations, Newton finishes to 1e-8)
  metamizer   30 Metamizer iterations per frame, no finishing stage (the pre-#12 behaviour)
Reported per run: per-step error (every frame restarted from the reference state, one step vs
the reference's step, max vertex distance in edge lengths), end-to-end error (final frame, max
vertex distance in % of the cloth size), max edge strain over the run, guard rejections, frames
the Newton stage finished, frames within the tolerance, median ms per frame. Threads: 1.

    python benchmarks/cloth_accuracy.py [--sizes 32 64] [--frames 12] [--scenes drape curtain ...]
writes benchmarks/results/cloth_accuracy.md (+ .json, + a strain/error-over-frames PNG).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import metaphys  # noqa: E402,F401  (before torch, as the CLI: it bounds OpenMP's idle spinning)

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from metaphys.sims.cloth import ClothSim, flat_cloth  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def scene(name: str, n: int, frames: int) -> dict:
    """ClothSim keyword arguments of a named scene at n x n vertices (1 m cloth)."""
    corners = np.zeros(n * n)
    corners[0] = corners[n - 1] = 1.0
    if name == "drape":  # the README scene: two corners pinned, a sphere under the free half
        return dict(rest_positions=flat_cloth(n, n, 1.0, height=1.0), pin_weights=corners,
                    colliders=[{"type": "sphere", "center": [0.0, 0.15, 0.55], "radius": 0.25}])
    if name == "curtain":  # pinned along the top row, sideways wind
        top = np.zeros(n * n)
        top[:n] = 1.0
        return dict(rest_positions=flat_cloth(n, n, 1.0, height=1.0, plane="xz"), pin_weights=top,
                    colliders=[], wind=(0.0, 3.0, 0.0))
    if name == "stiff_bend":  # two corners, 100x the default bending stiffness
        return dict(rest_positions=flat_cloth(n, n, 1.0, height=1.0), pin_weights=corners, colliders=[],
                    bending=2.5e-3)
    if name == "moving_collider":  # a sphere sweeping through a hanging curtain
        top = np.zeros(n * n)
        top[:n] = 1.0
        track = [[0.0, -0.4 + 0.8 * k / frames, 0.5] for k in range(frames + 1)]
        return dict(rest_positions=flat_cloth(n, n, 1.0, height=1.0, plane="xz"), pin_weights=top,
                    colliders=[{"type": "sphere", "center": track, "radius": 0.15}])
    raise ValueError(f"unknown scene {name!r}")


METHODS = {
    # the converged reference: direct Newton (a factorization per step) to 1e-10
    "reference": dict(solver="newton", tol=1e-10, step_tol=None, newton_linear="direct", frame_time_budget=None),
    # a second converged run at a looser tolerance: how far two converged answers drift apart
    # (contact makes the trajectory sensitive; this is the floor no solver can beat)
    "newton_1e-8": dict(solver="newton", tol=1e-8, step_tol=None, newton_linear="direct", frame_time_budget=None),
    # the product's default before issue #24: Metamizer 30 it, then direct Newton to 1e-8
    "previous_default": dict(solver="auto", tol=1e-8, step_tol=None, iterations_per_step=30, newton_linear="direct",
                             frame_time_budget=None),
    "default": dict(),   # ClothSim's defaults, whatever they are now
    # the same on one / two threads (cloth sims pick one up to 63^2 vertices: a second thread gains 20-30 %
    # on an idle machine there but costs 1.2-1.8x beside another job on a 2-core one, README "Threads")
    "default_1_thread": dict(threads=1),
    "default_2_threads": dict(threads=2),
    # the default of 2026-12-06 (same run, for the ratio): residual stop only, SuperLU below 48^2, a float64
    # PARDISO factor refreshed after 8 CG its from 48^2 (its symbolic analysis now reused, as in "default")
    "default_2026-12-06": dict(step_tol=None),
    "krylov_1e-4": dict(solver="newton", newton_linear="pcg", tol=1e-4),
    # the default before the analytic Hessian: Newton-Krylov on difference Hessian-vector products
    "difference_hessian": dict(),
    "metamizer": dict(solver="metamizer", tol=None, iterations_per_step=30),
}


# solver settings that are not ClothSim arguments
def _setup_2026_12_06(sim):
    small = sim.rows * sim.cols < 48 * 48
    sim.newton.factorization = "superlu" if small else "pardiso"
    sim.newton.preconditioner_precision = "double"
    sim.newton.refactor_after = 20 if small else 8


SETUP = {"difference_hessian": lambda sim: setattr(sim.newton, "hessian", "difference"),
         "default_2026-12-06": _setup_2026_12_06}


def make_sim(name, n, frames, method, threads=1):
    """The scene's ClothSim with a method's settings, on ``threads`` (None: the sims' own choice)."""
    sim = ClothSim(n, n, **{"threads": threads, **scene(name, n, frames), **METHODS[method]})
    SETUP.get(method, lambda s: None)(sim)
    return sim


def run(name, n, frames, method):
    sim = make_sim(name, n, frames, method)
    positions, states, times = [], [sim.state_dict()], []
    for _ in range(frames):
        t0 = time.perf_counter()
        sim.step()
        times.append(time.perf_counter() - t0)
        positions.append(sim.positions.reshape(-1, 3).copy())
        states.append(sim.state_dict())
    return sim, np.stack(positions), states, times


def step_energy(sim, state, k, a):
    """The step's energy (the loss Newton minimizes) at acceleration ``a`` from frame k's state."""
    sim.problem.fields = {key: v.clone() for key, v in state["fields"].items()}
    t = k + 1
    sim.problem.set_pins(pin_x=sim._to_model(sim._targets_at(t)))
    sim._set_colliders(t)
    return float(sim.problem.loss_and_grad(a)[0][0])


def per_step_errors(name, n, frames, method, ref_states, ref_positions):
    """Each frame restarted from the reference state: one step of ``method`` vs the reference.
    Returns (max vertex distance in edge lengths, relative step-energy difference) per frame: with
    contact a step's energy can have several minima, and the energy says whether a step that lands
    away from the reference's found a higher minimum (> 0) or a lower one (< 0)."""
    sim = make_sim(name, n, frames, method)
    errs, denergy = [], []
    for k in range(frames):
        sim.problem.fields = {key: v.clone() for key, v in ref_states[k]["fields"].items()}
        sim.u = torch.zeros_like(sim.u)
        sim.a_prev = ref_states[k]["a_prev"].clone()  # the reference's warm start too
        sim.frame = k
        sim.step()
        errs.append(float(np.linalg.norm(sim.positions.reshape(-1, 3) - ref_positions[k], axis=1).max())
                    / sim.length_unit)
        if sim.substeps == 1:
            e = step_energy(sim, ref_states[k], k, sim.a_prev)
            e_ref = step_energy(sim, ref_states[k], k, ref_states[k + 1]["a_prev"])
            denergy.append((e - e_ref) / max(abs(e_ref), 1e-300))
    return errs, denergy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--scenes", nargs="+", default=["curtain", "stiff_bend", "drape", "moving_collider"])
    ap.add_argument("--methods", nargs="+", default=["newton_1e-8", "previous_default", "difference_hessian", "default",
                                                    "metamizer"])
    ap.add_argument("--large-scenes", nargs="+", default=None,
                    help="scenes to run at sizes above 32 (default: all of --scenes)")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows, curves = [], {}
    for n in args.sizes:
        scenes = args.scenes if n <= 32 or args.large_scenes is None else args.large_scenes
        for name in scenes:
            ref, ref_pos, ref_states, ref_times = run(name, n, args.frames, "reference")
            size = 1.0
            ref_strain = [r.max_strain for r in ref.records]
            rows.append(dict(scene=name, size=n, method="reference", step_err=0.0, final_err_pct=0.0,
                             max_strain=max(ref_strain), ref_strain=max(ref_strain), guard=0,
                             newton_frames=sum(r.finished_by == "newton" for r in ref.records),
                             converged=sum(bool(r.converged) for r in ref.records), frames=args.frames,
                             ms=1000 * statistics.median(ref_times), ms_max=1000 * max(ref_times),
                             step_err_median=0.0, step_energy=0.0, budget_hit=0))
            print(json.dumps(rows[-1]), flush=True)
            curves[(name, n, "reference")] = dict(strain=ref_strain, err=[0.0] * args.frames)
            for method in args.methods:
                sim, pos, _, times = run(name, n, args.frames, method)
                err = np.linalg.norm(pos - ref_pos, axis=2).max(axis=1) / size
                steps, denergy = per_step_errors(name, n, args.frames, method, ref_states, ref_pos)
                strain = [r.max_strain for r in sim.records]
                rows.append(dict(scene=name, size=n, method=method, step_err=max(steps),
                                 step_err_median=float(np.median(steps)),
                                 step_energy=max(denergy) if denergy else float("nan"),
                                 final_err_pct=100 * float(err[-1]), max_strain=max(strain),
                                 ref_strain=max(ref_strain),
                                 guard=sum(r.guard_rejections for r in sim.records),
                                 newton_frames=sum(r.finished_by == "newton" for r in sim.records),
                                 converged=sum(bool(r.converged) for r in sim.records), frames=args.frames,
                                 ms=1000 * statistics.median(times), ms_max=1000 * max(times),
                                 budget_hit=sum(bool(getattr(r, "budget_hit", "")) for r in sim.records)))
                curves[(name, n, method)] = dict(strain=strain, err=(100 * err).tolist())
                print(json.dumps(rows[-1]), flush=True)
        rows += blender_rows(n, args.frames, scenes)
    write(args, rows, curves)


def blender_rows(n, frames, scenes):
    """Blender's own cloth on the same scenes, timed in this run (a subprocess: bpy is heavy)."""
    import subprocess
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_cloth.py")
    r = subprocess.run([sys.executable, script, "--size", str(n), "--frames", str(frames), "--scenes", *scenes],
                       capture_output=True, text=True, timeout=3600)
    out = []
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            b = json.loads(line)
            out.append(dict(scene=b["scene"], size=n, method="Blender cloth (speed only)", step_err=float("nan"),
                            final_err_pct=float("nan"), max_strain=float("nan"), ref_strain=float("nan"), guard=0,
                            newton_frames=0, converged=0, frames=frames, ms=b["ms"],
                            ms_max=b.get("ms_max", float("nan")), step_err_median=float("nan"),
                            step_energy=float("nan"), budget_hit=0))
            print(json.dumps(out[-1]), flush=True)
    if not out:
        print(f"Blender cloth not timed: {r.stderr.strip()[-300:]}", flush=True)
    return out


def write(args, rows, curves):
    os.makedirs(args.out, exist_ok=True)
    fmt = lambda v, f: "-" if v != v else format(v, f)  # NaN (not applicable) -> "-"
    lines = ["# Cloth accuracy against a converged reference (benchmarks/cloth_accuracy.py)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with a training job; load average at the "
             f"end {os.getloadavg()[0]:.1f}), "
             f"torch {torch.__version__}, 1 thread; {args.frames} frames at 24 fps; 1 m cloth; default "
             "material (tension 250 N/m, shear 10 N/m, bending 2.5e-5 N*m, 0.2 kg/m^2, air damping 0.1/s).",
             "", "Reference: direct Newton to relative residual 1e-10. default: ClothSim's defaults "
             "(issue #24: Newton-Krylov on the analytic sparse Hessian with a lagged float32 PARDISO factorization whose "
             "symbolic analysis is reused, stopping at the residual tolerance 1e-5 or at an estimated 3e-4 edge lengths "
             "from the step's answer (step_tol), frame budget as in the README); default_2026-12-06: the default of the "
             "day before, in the same run (residual stop only, SuperLU below 48², a float64 factor); difference_hessian: the same on Hessian-vector products by differences of "
             "the compiled gradient (the default before the analytic Hessian). "
             "previous_default: Metamizer 30 it + direct Newton finishing to 1e-8 (the default before #24). metamizer: 30 iterations, no finishing (the behaviour before issue #12). newton_1e-8: a "
             "second converged run (tolerance 1e-8): where it differs from the reference, the scene itself is "
             "sensitive (contact), and that difference is the floor for any solver.", "",
             "Per-step error: every frame restarted from the reference's state, one step, max vertex distance "
             "from the reference's step in edge lengths (max over frames / median). Step energy: the worst "
             "frame's (E - E_ref) / |E_ref| of that step's energy; where contact gives a step several minima, a "
             "step far from the reference's with energy <= 0 found another, no worse, minimum. Time per frame: "
             "median and worst frame of the run; 'x Blender': median over Blender's median in this run.", "",
             "| scene | size | method | per-step err max / median (edges) | step energy vs ref | final err (% size) | "
             "max strain | ref strain | Newton-finished | within tol | at budget | ms/frame median / worst | "
             "x Blender |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    blender = {(r["scene"], r["size"]): r["ms"] for r in rows if r["method"].startswith("Blender")}
    for r in rows:
        anchor = blender.get((r["scene"], r["size"]))
        ratio = "-" if anchor is None or r["method"].startswith("Blender") else f"{r['ms'] / anchor:.1f}"
        lines.append(f"| {r['scene']} | {r['size']}² | {r['method']} | {fmt(r['step_err'], '.2e')} / "
                     f"{fmt(r.get('step_err_median', float('nan')), '.1e')} | "
                     f"{fmt(r.get('step_energy', float('nan')), '+.1e')} | "
                     f"{fmt(r['final_err_pct'], '.3g')} | {fmt(100 * r['max_strain'], '.2f')} % | "
                     f"{fmt(100 * r['ref_strain'], '.2f')} % | "
                     f"{r['newton_frames']}/{r['frames']} | {r['converged']}/{r['frames']} | "
                     f"{r.get('budget_hit', 0)} | {r['ms']:.0f} / {fmt(r.get('ms_max', float('nan')), '.0f')} | "
                     f"{ratio} |")
    if not any(r["method"].startswith("Blender") for r in rows):
        lines += ["", "Blender's own cloth (the speed anchor of issue #12) was not timed in this run: bpy is "
                  "installed only by `make test-blender`."]
    else:
        lines += ["", "Blender rows: Blender 5.0's own cloth (bpy 5.0.1, quality 5, default material, no wind) on "
                  "the same geometry, pins and colliders, timed in this run (benchmarks/blender_cloth.py); speed "
                  "only: its model and material differ, so no error against the reference is given."]
    with open(os.path.join(args.out, "cloth_accuracy.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "cloth_accuracy.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for (name, n, method), c in curves.items():
            ax[0].plot(100 * np.array(c["strain"]), label=f"{name} {n}² {method}")
            ax[1].semilogy(np.maximum(c["err"], 1e-12), label=f"{name} {n}² {method}")
        ax[0].set(xlabel="frame", ylabel="max edge strain (%)")
        ax[1].set(xlabel="frame", ylabel="max vertex error vs reference (% of size)")
        ax[0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "cloth_accuracy.png"), dpi=90)
    except Exception as exc:  # the table is the result; the plot is a convenience
        print(f"plot skipped: {exc}")


if __name__ == "__main__":
    main()
