"""Smoke in physical units: the default plume has the same shape at 64², 128² and 256², and at 24 and 48 fps.

Per grid size n (one process, 1 thread): SmokeSim's default scene (a 1 m box, buoyancy 4 m/s^2,
viscosity 1e-3 m^2/s, a disc emitting 1 density per second) for ``--frames`` frames at 24 fps. Each
frame's **cap height** is the highest point where a row's maximum density reaches 10 % of the frame's
maximum (interpolated between rows; a fraction of the domain height, from the bottom), the rule of
``smoke_phiflow.cap_height``. The table gives each size's cap height every 0.25 s and the largest
difference to the finest size over all frames, in % of the domain height (issue #27: <= 5 %), with the
minimum density of any frame, fluid steps per frame and ms per frame. The fps check runs the smallest
size again at 48 fps for twice the frames and compares it with the 24 fps run at the same times (cap
height, and the relative L2 difference of the density). ``--phiflow-python``: PhiFlow's plume of the
same physical scene (benchmarks/smoke_phiflow.py) at the smallest size, an independent solver's cap.

Each size is stored in ``smoke_units.json`` (sizes can run separately); all stored sizes are
rendered to ``smoke_units.md`` and ``smoke_units.png``.

    .venv/bin/python benchmarks/smoke_units.py --sizes 64 128 256 --frames 48
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

from smoke_phiflow import cap_height  # noqa: E402  (numpy only: PhiFlow's interpreter measures the same way)

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = 0.05  # cap heights within 5 % of the domain height (issue #27)


def run_plume(n: int, frames: int, optimizer, fps: float = 24.0) -> dict:
    """The default plume at n x n: densities [F, n, n] and each frame's record and wall time."""
    from metaphys.sims.smoke import SmokeSim
    sim = SmokeSim((n, n), fps=fps, optimizer=optimizer, threads=1)
    dens, ms, records = [], [], []
    for _ in range(frames):
        t0 = time.perf_counter()
        rec = sim.step()
        ms.append(1e3 * (time.perf_counter() - t0))
        dens.append(sim.density.copy())
        records.append(rec)
    d = np.stack(dens)
    return {"density": d, "cap": [cap_height(f) for f in d], "min_density": [r.min_density for r in records],
            "substeps": [r.substeps for r in records], "courant": [r.courant for r in records], "ms": ms,
            "time_s": [r.time_s for r in records]}


def measure_size(n: int, frames: int, optimizer) -> dict:
    run = run_plume(n, frames, optimizer)
    entry = {k: run[k] for k in ("cap", "min_density", "substeps", "courant", "ms", "time_s")}
    entry.update(n=n, frames=frames, ms_per_frame=float(np.median(run["ms"])),
                 final=np.round(run["density"][-1], 4).tolist())
    print(f"  {n}^2: cap {entry['cap'][-1]:.3f} at {entry['time_s'][-1]:.2f} s, "
          f"{entry['ms_per_frame']:.0f} ms/frame, steps/frame {np.mean(entry['substeps']):.1f}, "
          f"min density {min(entry['min_density']):.3g}", flush=True)
    return entry


def measure_fps(n: int, frames: int, optimizer) -> dict:
    """The same plume at 24 and 48 fps, compared at the 24 fps frames' times."""
    a, b = run_plume(n, frames, optimizer, 24.0), run_plume(n, 2 * frames, optimizer, 48.0)
    da, db = a["density"], b["density"][1::2]
    rel = [float(np.linalg.norm(y - x) / max(np.linalg.norm(x), 1e-300)) for x, y in zip(da, db)]
    cap_diff = np.abs(np.subtract(a["cap"], b["cap"][1::2]))
    return {"n": n, "frames": frames, "time_s": a["time_s"], "rel_l2": rel, "cap_diff": cap_diff.tolist(),
            "steps_per_second": [float(np.sum(a["substeps"]) / a["time_s"][-1]),
                                 float(np.sum(b["substeps"]) / b["time_s"][-1])]}


def phiflow_caps(python: str, n: int, frames: int) -> dict:
    if not python:
        return {"error": "no --phiflow-python given"}
    try:
        cp = subprocess.run([python, os.path.join(HERE, "smoke_phiflow.py"), str(n), str(frames)],
                            capture_output=True, text=True, timeout=3600,
                            env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1"))
        return json.loads(cp.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": f"PhiFlow run failed: {exc}"}


def cap_table(raw: dict) -> tuple:
    """(markdown table of cap heights every 0.25 s, {n: largest difference to the finest size})."""
    sizes = sorted(raw["sizes"], key=int)
    finest = raw["sizes"][sizes[-1]]
    frames = min(raw["sizes"][k]["frames"] for k in sizes)
    step = max(1, round(0.25 * 24))
    picks = list(range(step - 1, frames, step))
    worst = {k: float(np.max(np.abs(np.subtract(raw["sizes"][k]["cap"][:frames], finest["cap"][:frames]))))
             for k in sizes}
    pf = raw.get("phiflow", {})
    headers = ["t (s)"] + [f"{k}²" for k in sizes] + ([f"PhiFlow {pf['n']}²"] if "cap" in pf else [])
    rows = []
    for i in picks:
        row = [f"{finest['time_s'][i]:.2f}"] + [f"{raw['sizes'][k]['cap'][i]:.3f}" for k in sizes]
        if "cap" in pf:
            row.append(f"{pf['cap'][i]:.3f}" if i < len(pf["cap"]) else "-")
        rows.append(row)
    return common.md_table(headers, rows), worst


def render(raw: dict, out: str, machine_md: str) -> None:
    import matplotlib.pyplot as plt
    sizes = sorted(raw["sizes"], key=int)
    table, worst = cap_table(raw)
    finest = sizes[-1]
    summary = common.md_table(
        ["grid", "frames", "largest cap difference to " + f"{finest}² (% of height)", f"within {100 * TARGET:.0f} %",
         "min density (all frames)", "fluid steps/frame (mean, max)", "largest step (cells)", "ms/frame (median)"],
        [[f"{k}²", raw["sizes"][k]["frames"], f"{100 * worst[k]:.2f}", "yes" if worst[k] <= TARGET else "**no**",
          f"{min(raw['sizes'][k]['min_density']):.3g}",
          f"{np.mean(raw['sizes'][k]['substeps']):.1f}, {max(raw['sizes'][k]['substeps'])}",
          f"{max(raw['sizes'][k]['courant']):.2f}", f"{raw['sizes'][k]['ms_per_frame']:.0f}"] for k in sizes])
    fps = raw.get("fps")
    fps_md = ""
    if fps:
        fps_md = (f"\n## 24 vs 48 fps ({fps['n']}², {fps['frames']} frames at 24 fps)\n\nThe 48 fps run's frame 2k "
                  f"against the 24 fps run's frame k (the same time): largest cap difference "
                  f"{100 * max(fps['cap_diff']):.2f} % of the height; relative L2 of the density "
                  f"{fps['rel_l2'][len(fps['rel_l2']) // 2 - 1]:.1e} at {fps['time_s'][len(fps['time_s']) // 2 - 1]:.2f} s and "
                  f"{fps['rel_l2'][-1]:.1e} at {fps['time_s'][-1]:.2f} s (the two take their own fluid steps: "
                  f"{fps['steps_per_second'][0]:.0f} and {fps['steps_per_second'][1]:.0f} per second). The grid-unit "
                  "smoke wrote identical frames at any fps.\n")
    pf = raw.get("phiflow", {})
    pf_md = ""
    if "cap" in pf:
        mine = raw["sizes"].get(str(pf["n"]))
        diff = (f"; largest difference to metaphys at {pf['n']}²: "
                f"{100 * float(np.max(np.abs(np.subtract(pf['cap'], mine['cap'][:len(pf['cap'])])))):.2f} % of the height"
                if mine else "")
        pf_md = (f"\nPhiFlow {pf.get('version', '?')} (an independent solver: semi-Lagrangian velocity, MacCormack "
                 f"density, one step per frame) on the same physical scene, `benchmarks/smoke_phiflow.py`{diff}.\n")
    elif pf:
        pf_md = f"\nPhiFlow: {pf.get('error', '?')}\n"

    fig, axes = plt.subplots(1, 1 + len(sizes), figsize=(3.2 * (1 + len(sizes)), 3.4))
    for k in sizes:
        axes[0].plot(raw["sizes"][k]["time_s"], raw["sizes"][k]["cap"], label=f"{k}²")
    if "cap" in pf:
        axes[0].plot(raw["sizes"][str(sizes[0])]["time_s"][:len(pf["cap"])], pf["cap"], "k:", label=f"PhiFlow {pf['n']}²")
    axes[0].set_xlabel("time (s)")
    axes[0].set_ylabel("cap height (fraction of the domain)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("plume cap height")
    for ax, k in zip(axes[1:], sizes):
        e = raw["sizes"][k]
        ax.imshow(np.asarray(e["final"]), cmap="inferno", vmin=0, vmax=1)
        ax.set_title(f"{k}², t = {e['time_s'][-1]:.2f} s", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "smoke_units.png"), dpi=100)
    plt.close(fig)

    text = ("# Smoke in physical units: one plume at every resolution and fps\n\n"
            "Generated by `benchmarks/smoke_units.py` (see its docstring): SmokeSim's default scene (1 m box, "
            "buoyancy 4 m/s² per unit density, viscosity 1e-3 m²/s, emitter 1 density/s, 24 fps). Cap height = the "
            "highest point where a row's maximum density reaches 10 % of the frame's maximum, as a fraction of "
            "the domain height above the bottom.\n\n" + summary + "\n## Cap height over time\n\n" + table + pf_md
            + fps_md + "\n![cap height over time and the last frame of each size](smoke_units.png)\n\n" + machine_md)
    common.write(os.path.join(out, "smoke_units.md"), text)


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--frames", type=int, nargs="+", default=[48],
                   help="frames per size (one value for all, or one per size)")
    p.add_argument("--no-fps", action="store_true", help="skip the 24 vs 48 fps check")
    p.add_argument("--phiflow-python", default=os.environ.get("PHIFLOW_PYTHON", ""),
                   help="an interpreter with phiflow installed (never a metaphys dependency)")
    p.add_argument("--fresh", action="store_true", help="forget earlier sizes stored in smoke_units.json")
    args = p.parse_args()
    out = common.setup(args)
    frames = args.frames if len(args.frames) == len(args.sizes) else [args.frames[0]] * len(args.sizes)
    if args.quick:
        args.sizes, frames = [24, 32], [6, 6]
    from metaphys.optim.metamizer import Metamizer
    from metaphys.sims.smoke import SmokeSim
    model, weights = common.load_weights(args.weights)
    optimizer = SmokeSim.fastest_optimizer("cpu", Metamizer(model))
    raw_path = os.path.join(out, "smoke_units.json")
    raw = {} if args.fresh or not os.path.exists(raw_path) else json.load(open(raw_path))
    raw.setdefault("sizes", {})
    monitor = common.LoadMonitor()
    run_plume(min(args.sizes), 2, optimizer)  # warm-up: oneDNN sets up its kernels on first use
    for n, f in zip(args.sizes, frames):
        raw["sizes"][str(n)] = measure_size(n, f, optimizer)
        monitor.sample()
        common.write(raw_path, json.dumps(raw))
    if not args.no_fps:
        raw["fps"] = measure_fps(min(args.sizes), min(frames), optimizer)
        print(f"  fps: largest cap difference {max(raw['fps']['cap_diff']):.4f}, rel. L2 at the end "
              f"{raw['fps']['rel_l2'][-1]:.2e}", flush=True)
    if args.phiflow_python:
        raw["phiflow"] = phiflow_caps(args.phiflow_python, min(args.sizes), min(frames))
    common.write(raw_path, json.dumps(raw))
    machine_md = common.environment_md(common.machine_info(), monitor.report(), weights, args)
    render(raw, out, machine_md)


if __name__ == "__main__":
    main()
