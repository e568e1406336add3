"""A 3-D plume with SmokeSim3D (issue #28 item 3): time per frame on 1 thread, divergence relative to the
velocity, minimum density, mass against what the emitter injected; writes benchmarks/results/smoke3d_sim.md.

The sim runs its default optimizer: on CPU the 3-D network's fast module (metaphys.optim.fast). With
``--compare-plain`` a second sim with the plain shipped module (what ran before the fast module) steps the
same frames interleaved frame by frame in the same process: seconds per frame before/after and how far the
two sims' answers (iterations, density, velocity) drift apart.

Not the item-5 benchmark (PhiFlow 3D, Mantaflow): this measures our own sim alone.

    .venv/bin/python benchmarks/smoke3d_sim.py [--size 32] [--frames 24] [--compare-plain]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def _before_after(rows, before, cpu_s, sim, plain) -> list:
    """The before/after section: seconds per frame of the plain and the fast module, interleaved."""
    pairs = [(r, b, c) for r, b, c in zip(rows, before, cpu_s) if r[0].iterations > 0]
    w_fast, w_plain = [r[1] for r, _, _ in pairs], [b[1] for _, b, _ in pairs]
    c_fast, c_plain = [c for _, _, c in pairs], [b[2] for _, b, _ in pairs]
    it_fast, it_plain = [r[0].iterations for r, _, _ in pairs], [b[0].iterations for _, b, _ in pairs]
    it_diff = max(abs(a - b) for a, b in zip(it_fast, it_plain))
    d_rel = float(np.abs(sim.density - plain.density).max() / max(np.abs(plain.density).max(), 1e-300))
    v_rel = float(np.abs(sim.velocity - plain.velocity).max() / max(np.abs(plain.velocity).max(), 1e-300))
    per_it = [(cp / ip) / (cf / itf) for cp, ip, cf, itf in zip(c_plain, it_plain, c_fast, it_fast)]
    lines = ["## Before / after: the plain shipped module vs the fast module (same run, interleaved)", "",
             "Two sims with the same settings step the same frames alternately (the plain module's frame, then "
             "the fast module's), 1 thread each. CPU: this process's CPU seconds for the frame (one thread, so "
             "what an idle core would take); wall: inflated by the other jobs on the machine.", "",
             "| frame | plain: CPU s (wall) | iterations | fast: CPU s (wall) | iterations | CPU per iteration, "
             "plain / fast |", "|---|---|---|---|---|---|"]
    for (r, b, c), ratio in zip(pairs, per_it):
        lines.append(f"| {r[0].frame} | {b[2]:.2f} ({b[1]:.2f}) | {b[0].iterations} | {c:.2f} ({r[1]:.2f}) | "
                     f"{r[0].iterations} | {ratio:.2f}x |")
    med = statistics.median
    lines += ["", f"* Seconds per frame, median over {len(pairs)} frames with a fluid solve: plain module **{med(c_plain):.2f} s "
              f"CPU** ({med(w_plain):.2f} s wall), fast module **{med(c_fast):.2f} s CPU** ({med(w_fast):.2f} s wall): "
              f"**{med(c_plain) / med(c_fast):.2f}x** CPU ({med(w_plain) / med(w_fast):.2f}x wall); totals "
              f"{sum(c_plain):.1f} s vs {sum(c_fast):.1f} s CPU ({sum(c_plain) / sum(c_fast):.2f}x), "
              f"{sum(w_plain):.1f} s vs {sum(w_fast):.1f} s wall ({sum(w_plain) / sum(w_fast):.2f}x).",
              f"* CPU seconds per Metamizer iteration: plain {sum(c_plain) / sum(it_plain):.3f} s, fast "
              f"{sum(c_fast) / sum(it_fast):.3f} s ({(sum(c_plain) / sum(it_plain)) / (sum(c_fast) / sum(it_fast)):.2f}x; "
              f"per frame {min(per_it):.2f}-{max(per_it):.2f}x).",
              f"* Answers: iterations per frame differ by at most {it_diff} (both sims reach the tolerance every "
              f"frame: {sum(it_plain)} vs {sum(it_fast)} iterations in all); after the last frame the density differs by "
              f"{d_rel:.1e} and the velocity by {v_rel:.1e} of their largest values -- float32 round-off of the "
              "network's summation order (each step equal to ~3e-7), carried through the frames by solves that "
              "stop at a tolerance.", ""]
    return lines


def drift(n: int, frames: int) -> int:
    """Three sims, same settings: the plain module on 1 thread (the reference), the plain module on 2
    threads (oneDNN sums in another order: float32 round-off only), the fast module on 1 thread; prints
    each one's iterations per frame and its density / velocity difference from the reference at the end."""
    from metaphys.optim.metamizer import Metamizer
    from metaphys.sims.smoke3d import SmokeSim3D
    sims = {"plain module, 1 thread (reference)": SmokeSim3D((n, n, n), threads=1, optimizer=Metamizer(dims=3)),
            "plain module, 2 threads": SmokeSim3D((n, n, n), threads=2, optimizer=Metamizer(dims=3)),
            "fast module, 1 thread": SmokeSim3D((n, n, n), threads=1)}
    its = {k: [] for k in sims}
    for _ in range(frames):
        for k, sim in sims.items():
            its[k].append(sim.step().iterations)
    ref_key = next(iter(sims))
    ref = sims[ref_key]
    print(f"| {n}^3, {frames} frames | iterations in all | max per-frame difference in iterations | density diff / max "
          "| velocity diff / max |\n|---|---|---|---|---|")
    for k, sim in sims.items():
        d = float(np.abs(sim.density - ref.density).max() / np.abs(ref.density).max())
        v = float(np.abs(sim.velocity - ref.velocity).max() / np.abs(ref.velocity).max())
        di = max(abs(a - b) for a, b in zip(its[k], its[ref_key]))
        print(f"| {k} | {sum(its[k])} | {di} | {d:.1e} | {v:.1e} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "smoke3d_sim.md"))
    p.add_argument("--compare-plain", action="store_true",
                   help="also step a sim with the plain shipped 3-D module, interleaved (before/after)")
    p.add_argument("--drift", action="store_true",
                   help="no timing, no file: how far the fast module's answers drift from the plain module's, "
                        "against the plain module's own drift under another summation order (2 threads)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.drift:
        return drift(args.size, args.frames)
    from metaphys.optim.metamizer import Metamizer
    from metaphys.sims.smoke3d import SmokeSim3D
    n = args.size
    t = time.perf_counter()
    sim = SmokeSim3D((n, n, n), threads=1)   # the defaults: 1 m box, buoyancy 4 m/s^2, tol 1e-10
    build_s = time.perf_counter() - t
    plain = SmokeSim3D((n, n, n), threads=1, optimizer=Metamizer(dims=3)) if args.compare_plain else None
    rows, before, cpu_s = [], [], []   # cpu_s: this process's CPU seconds per frame (1 thread)
    load = os.getloadavg()[0]
    loads = [load]
    for _ in range(args.frames):
        if plain is not None:   # interleaved: the plain sim's frame just before the fast sim's
            t, c = time.perf_counter(), time.process_time()
            rec_p = plain.step()
            before.append((rec_p, time.perf_counter() - t, time.process_time() - c))
        t, c = time.perf_counter(), time.process_time()
        rec = sim.step()
        wall = time.perf_counter() - t
        cpu_s.append(time.process_time() - c)
        loads.append(os.getloadavg()[0])
        div = sim.divergence()
        d = sim.density
        w = d.sum(axis=(0, 2))
        height = float((w * (n - 0.5 - np.arange(n))).sum() / max(w.sum(), 1e-300)) * sim.units.cell_m
        rows.append((rec, wall, div, float(np.abs(sim.velocity).max()), height,
                     float(sim.total_density()[0] / sim.injected[0]) if float(sim.injected[0]) else 1.0))
        print(f"frame {rec.frame}: {wall:.2f} s, {rec.iterations} it, residual {rec.residual:.2e}, "
              f"div mac {div['mac']:.1e} interior {div['transport_interior']:.1e} wall {div['transport_wall']:.2f}, "
              f"min {rec.min_density:.2e}" + (f"; plain module {before[-1][1]:.2f} s, {before[-1][0].iterations} it"
                                              if before else ""), flush=True)
    moving = [r for r in rows if r[0].iterations > 0]
    times = [r[1] for r in moving]
    lines = [f"# 3-D smoke: a {n}^3 plume, {args.frames} frames (issue #28 item 3)", "",
             f"`benchmarks/smoke3d_sim.py`: `SmokeSim3D(({n}, {n}, {n}))` at its defaults (1 m box, 24 fps, buoyancy "
             "4 m/s^2, viscosity 1e-3 m^2/s, the default emitter sphere; each fluid step solved by the 3-D Metamizer "
             "with the subspace acceleration to an MSR of 1e-10, cap 60), torch "
             f"{torch.__version__}, **1 thread**, {os.cpu_count()} CPU cores ({_cpu()}) shared with other jobs (1-min "
             f"load average {load:.2f} at the start, median {statistics.median(loads):.2f} over the frames, "
             f"{max(loads):.2f} at most): times are rough. The fluid steps run the sim's default optimizer, the "
             f"3-D network's fast module (metaphys.optim.fast; built once per process: {build_s:.1f} s with the "
             "sim).", "",
             "| frame | s | fluid steps | iterations | residual (MSR) | converged | div. MAC / max v | div. transport, "
             "interior / max V | same, nodes beside a wall | min density | max speed m/s | centroid height m | "
             "mass / injected |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec, wall, div, vmax, height, mass in rows:
        lines.append(f"| {rec.frame} | {wall:.2f} | {rec.substeps} | {rec.iterations} | {rec.residual:.1e} | "
                     f"{rec.converged} | {div['mac']:.1e} | {div['transport_interior']:.1e} | "
                     f"{div['transport_wall']:.2f} | {rec.min_density:.1e} | {vmax:.3f} | {height:.3f} | {mass:.12f} |")
    lines += ["", "## Summary", "",
              f"* Time per frame (frames with a fluid solve, {len(times)}): median **{statistics.median(times):.2f} s**, "
              f"min {min(times):.2f} s, max {max(times):.2f} s; "
              f"{statistics.median([r[0].iterations for r in moving]):.0f} Metamizer iterations per frame (median).",
              f"* Divergence: MAC velocity at most **{max(r[2]['mac'] for r in rows):.1e}** of the largest face "
              "velocity (curl of the vector potential: zero by construction, round-off only); the face field the "
              f"transport moves the smoke with at most {max(r[2]['transport_interior'] for r in rows):.1e} of the "
              "largest node velocity at nodes whose neighbours are all fluid, and up to "
              f"{max(r[2]['transport_wall'] for r in rows):.2f} at nodes beside a wall (the emitter sits on the "
              "floor: the closed face between a node and the wall cuts off the half cell of flow the no-slip "
              "faces allow -- an O(cell) boundary effect of the 2-D scheme too).",
              f"* Minimum density over all frames **{min(r[0].min_density for r in rows):.1e}** (the monotone "
              f"transport; nothing clamped); mass / injected = 1 to {max(abs(r[5] - 1) for r in rows):.1e}.",
              f"* Frames that hit the iteration cap before the tolerance: "
              f"{sum(1 for r in rows if r[0].hit_cap)} of {len(rows)}.", ""]
    if plain is not None:
        lines += _before_after(rows, before, cpu_s, sim, plain)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines[-6:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
