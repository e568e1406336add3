"""PhiFlow's 2D smoke plume for benchmarks/smoke.py; runs in an interpreter that has `phiflow`
(installed only for the benchmark, never a metaphys requirement). Prints one JSON line:

    {"n", "frames", "ms_per_frame" (median, pressure tol 1e-3), "ms_per_frame_tight",
     "density_rel_l2" (tol 1e-3 run against the same scene at pressure tol 1e-6), "cap" (plume cap
     height per frame, fraction of the domain height, as benchmarks/smoke_units.py measures it),
     "min_density", "version"}

or, when PhiFlow's pressure solve diverges, {"error", "frames_before_failure",
"ms_per_frame_before_failure" (median of the frames it finished), ...}.

Scene: SmokeSim's default plume in the same physical units (argv[3], a JSON object of size_m, fps,
buoyancy, emitter_density, viscosity; SmokeSim's defaults otherwise): a closed square box of
``size_m`` metres (no-slip velocity walls), a disc emitter of radius 0.1 of the side centred 0.15 of
the height above the bottom adding ``emitter_density`` per second, buoyancy ``buoyancy`` m/s^2 per
unit density, viscosity by explicit diffusion (sub-stepped to stay stable), MacCormack density
advection, semi-Lagrangian velocity advection and the pressure solve (conjugate gradient, the closed
box's constant null space declared, warm started from the last pressure): one step per frame, as
PhiFlow's semi-Lagrangian steps are stable at any time step.
"""
import json
import math
import sys
import time
import warnings

import numpy as np

DEFAULTS = {"size_m": 1.0, "fps": 24.0, "buoyancy": 4.0, "emitter_density": 1.0, "viscosity": 1e-3}


def cap_height(d: np.ndarray, frac: float = 0.1) -> float:
    """Highest point (fraction of the height, from the bottom) where a row's max density reaches
    ``frac`` of the frame's max; row 0 = top. Same rule as benchmarks/smoke_units.py."""
    rows = d.max(axis=1)
    peak = rows.max()
    if peak <= 0:
        return 0.0
    above = np.nonzero(rows >= frac * peak)[0]
    i = above[0]
    if i == 0:
        return 1.0
    # the threshold crossing between row i-1 (below it) and row i (above it), linearly
    t = (rows[i] - frac * peak) / max(rows[i] - rows[i - 1], 1e-300)
    return float((len(rows) - (i - t) - 0.5) / len(rows))


class Failed(Exception):
    """A run that stopped at ``frame`` (0-based), with the wall times of the frames before it."""

    def __init__(self, frame: int, times: list, cause: Exception):
        super().__init__(f"{type(cause).__module__}.{type(cause).__name__}: {cause}")
        self.frame, self.times = frame, list(times)


def plume(n: int, frames: int, tol: float, p: dict):
    from phi import flow as pf
    size, dt = p["size_m"], 1.0 / p["fps"]
    dx = size / n
    bounds = pf.Box(x=size, y=size)
    smoke = pf.CenteredGrid(0, pf.extrapolation.ZERO_GRADIENT, x=n, y=n, bounds=bounds)
    velocity = pf.StaggeredGrid(0, 0, x=n, y=n, bounds=bounds)
    emitter = pf.CenteredGrid(pf.Sphere(center=pf.vec(x=0.5 * size, y=0.15 * size), radius=0.1 * size), 0,
                              x=n, y=n, bounds=bounds)
    inflow = p["emitter_density"] * dt * emitter
    diffusion_steps = max(1, math.ceil(4 * p["viscosity"] * dt / dx ** 2))
    pressure = None
    times, out = [], []
    for frame in range(frames):
        t0 = time.perf_counter()
        smoke = pf.advect.mac_cormack(smoke, velocity, dt=dt) + inflow
        buoyancy = pf.resample(smoke * (0, p["buoyancy"] * dt), to=velocity)
        velocity = pf.advect.semi_lagrangian(velocity, velocity, dt=dt) + buoyancy
        if p["viscosity"] > 0:
            velocity = pf.diffuse.explicit(velocity, p["viscosity"], dt, substeps=diffusion_steps)
        try:
            velocity, pressure = pf.fluid.make_incompressible(
                velocity, (), pf.Solve("CG", tol, tol, x0=pressure, max_iterations=20000, rank_deficiency=1))
        except Exception as exc:  # PhiFlow's CG diverges on some grids: keep the frames it did
            raise Failed(frame, times, exc) from None
        values = smoke.values.numpy("y,x")[::-1]  # row 0 = top, as metaphys writes it
        times.append(time.perf_counter() - t0)
        out.append(values)
    return np.stack(out), times


def main():
    warnings.filterwarnings("ignore")
    n, frames = int(sys.argv[1]), int(sys.argv[2])
    p = dict(DEFAULTS, **(json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
    import phi
    try:
        d, times = plume(n, frames, 1e-3, p)
    except Failed as failed:  # the time per frame it managed is still a same-run comparison
        print(json.dumps({"n": n, "frames": frames, "error": str(failed), "frames_before_failure": failed.frame,
                          "ms_per_frame_before_failure": 1e3 * float(np.median(failed.times)) if failed.times else None,
                          "version": phi.__version__}))
        return
    try:
        ref, times_tight = plume(n, frames, 1e-6, p)
    except Failed as failed:
        print(json.dumps({"n": n, "frames": frames, "ms_per_frame": 1e3 * float(np.median(times)),
                          "density_rel_l2": None, "error_tight": str(failed), "cap": [cap_height(f) for f in d],
                          "min_density": float(d.min()), "version": phi.__version__}))
        return
    err = float(np.linalg.norm(d - ref) / max(np.linalg.norm(ref), 1e-300))
    print(json.dumps({"n": n, "frames": frames, "ms_per_frame": 1e3 * float(np.median(times)),
                      "ms_per_frame_tight": 1e3 * float(np.median(times_tight)), "density_rel_l2": err,
                      "cap": [cap_height(f) for f in d], "min_density": float(d.min()), "version": phi.__version__}))


if __name__ == "__main__":
    main()
