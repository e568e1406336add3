"""PhiFlow's 2D smoke plume for benchmarks/smoke.py; runs in an interpreter that has `phiflow`
(installed only for the benchmark, never a metaphys requirement). Prints one JSON line:

    {"n", "frames", "ms_per_frame" (median, pressure tol 1e-3), "ms_per_frame_tight",
     "density_rel_l2" (tol 1e-3 run against the same scene at pressure tol 1e-6), "version"}

Scene (as close to SmokeSim's default as PhiFlow's API allows; grid units, dt = 1): closed box
(no-slip velocity walls), a disc emitter of radius n/10 at the bottom centre adding 0.1 density
per step, buoyancy 0.02 per unit density, MacCormack density advection, semi-Lagrangian velocity
advection, pressure solve (conjugate gradient, the closed box's constant null space declared)
warm started from the last pressure.
"""
import json
import warnings
import sys
import time

import numpy as np


def plume(n: int, frames: int, tol: float):
    from phi import flow as pf
    bounds = pf.Box(x=n, y=n)
    smoke = pf.CenteredGrid(0, pf.extrapolation.ZERO_GRADIENT, x=n, y=n, bounds=bounds)
    velocity = pf.StaggeredGrid(0, 0, x=n, y=n, bounds=bounds)
    r = max(2.0, n / 10)
    inflow = 0.1 * pf.CenteredGrid(pf.Sphere(center=pf.vec(x=n / 2, y=4 + r), radius=r), 0, x=n, y=n, bounds=bounds)
    pressure = None
    times, out = [], []
    for _ in range(frames):
        t0 = time.perf_counter()
        smoke = pf.advect.mac_cormack(smoke, velocity, dt=1.0) + inflow
        buoyancy = pf.resample(smoke * (0, 0.02), to=velocity)
        velocity = pf.advect.semi_lagrangian(velocity, velocity, dt=1.0) + buoyancy
        velocity, pressure = pf.fluid.make_incompressible(velocity, (), pf.Solve("CG", tol, tol, x0=pressure, max_iterations=20000, rank_deficiency=1))
        values = smoke.values.numpy("y,x")
        times.append(time.perf_counter() - t0)
        out.append(values)
    return np.stack(out), times


def main():
    warnings.filterwarnings("ignore")
    n, frames = int(sys.argv[1]), int(sys.argv[2])
    import phi
    d, times = plume(n, frames, 1e-3)
    ref, times_tight = plume(n, frames, 1e-6)
    err = float(np.linalg.norm(d - ref) / max(np.linalg.norm(ref), 1e-300))
    print(json.dumps({"n": n, "frames": frames, "ms_per_frame": 1e3 * float(np.median(times)),
                      "ms_per_frame_tight": 1e3 * float(np.median(times_tight)), "density_rel_l2": err,
                      "version": phi.__version__}))


if __name__ == "__main__":
    main()
