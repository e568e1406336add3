"""PhiFlow's 3-D smoke plume for benchmarks/smoke3d.py; runs in an interpreter that has `phiflow`
(installed only for the benchmark, never a metaphys requirement). Prints one JSON line:

    {"n", "frames", "tol", "ms" (per frame), "ms_per_frame" (median), "ms_max", "cpu_ms" (process CPU per
     frame), "cpu_ms_per_frame" (median), "min_density",
     "divergence" (max |div v| * cell / max |v| over the frames), "centroid_m" (density centroid height per
     frame, metres above the floor), "mass", "version"[, "density_rel_l2" (against itself at --tight)]}

or, when its pressure solve fails, {"error", "frames_before_failure", "ms_per_frame_before_failure", ...}.

    python benchmarks/smoke3d_phiflow.py N FRAMES [JSON params] [--tight 1e-6] [--save density.npy]

PhiFlow computes in float32 (its default); the --tight reference runs in float64.

Scene: SmokeSim3D's default plume in the same physical units (JSON params: size_m, fps, buoyancy,
emitter_density, viscosity; SmokeSim3D's defaults otherwise): a closed cube of ``size_m`` metres (no-slip
velocity walls), a sphere emitter of radius 0.1 of the side centred 0.15 of the height above the floor
adding ``emitter_density`` per second, buoyancy ``buoyancy`` m/s^2 per unit density along +z, viscosity
by explicit diffusion (sub-stepped to stay stable), MacCormack density advection, semi-Lagrangian
velocity advection and the pressure solve (conjugate gradient, the closed box's constant null space
declared, warm started from the last pressure, relative and absolute tolerance ``tol`` = 1e-3 as in the
2-D comparison): one step per frame (its semi-Lagrangian steps are stable at any step). The density is
returned as metaphys lays it out: [D, H, W] = (y, z from the top, x).
"""
import argparse
import json
import math
import time
import warnings

import numpy as np

DEFAULTS = {"size_m": 1.0, "fps": 24.0, "buoyancy": 4.0, "emitter_density": 1.0, "viscosity": 1e-3}


class Failed(Exception):
    """A run that stopped at ``frame`` (0-based), with the wall times of the frames before it."""

    def __init__(self, frame: int, times: list, cause: Exception, cpus: list = ()):
        super().__init__(f"{type(cause).__module__}.{type(cause).__name__}: {cause}")
        self.frame, self.times, self.cpus = frame, list(times), list(cpus)


def int64_sparse_indices() -> None:
    """phiml's numpy backend casts ``ravel_multi_index`` back to the indices' dtype (int32): above 2^31
    matrix entries (the 64^3 pressure matrix has 2^36) the linear index overflows and PhiFlow's pressure
    solve stops with "index -2147479552 is out of bounds for array with size 68719476736". The indices
    are widened to int64 first; PhiFlow's numerics are untouched."""
    from phiml.backend._numpy_backend import NumPyBackend
    if getattr(NumPyBackend.ravel_multi_index, "metaphys_int64", False):
        return
    original = NumPyBackend.ravel_multi_index

    def ravel(self, multi_index, shape, mode="undefined"):
        return original(self, np.asarray(multi_index, dtype=np.int64), shape, mode)

    ravel.metaphys_int64 = True
    NumPyBackend.ravel_multi_index = ravel


def plume(n: int, frames: int, tol: float, p: dict):
    """(densities [F, D, H, W], seconds per frame, divergence per frame, CPU seconds per frame)."""
    from phi import flow as pf
    int64_sparse_indices()
    size, dt = p["size_m"], 1.0 / p["fps"]
    dx = size / n
    bounds = pf.Box(x=size, y=size, z=size)
    smoke = pf.CenteredGrid(0, pf.extrapolation.ZERO_GRADIENT, x=n, y=n, z=n, bounds=bounds)
    velocity = pf.StaggeredGrid(0, 0, x=n, y=n, z=n, bounds=bounds)
    emitter = pf.CenteredGrid(pf.Sphere(center=pf.vec(x=0.5 * size, y=0.5 * size, z=0.15 * size),
                                        radius=0.1 * size), 0, x=n, y=n, z=n, bounds=bounds)
    inflow = p["emitter_density"] * dt * emitter
    diffusion_steps = max(1, math.ceil(6 * p["viscosity"] * dt / dx ** 2))
    pressure = None
    times, cpus, out, div = [], [], [], []
    for frame in range(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        smoke = pf.advect.mac_cormack(smoke, velocity, dt=dt) + inflow
        buoyancy = pf.resample(smoke * (0, 0, p["buoyancy"] * dt), to=velocity)
        velocity = pf.advect.semi_lagrangian(velocity, velocity, dt=dt) + buoyancy
        if p["viscosity"] > 0:
            velocity = pf.diffuse.explicit(velocity, p["viscosity"], dt, substeps=diffusion_steps)
        try:
            velocity, pressure = pf.fluid.make_incompressible(
                velocity, (), pf.Solve("CG", tol, tol, x0=pressure, max_iterations=20000, rank_deficiency=1))
        except Exception as exc:  # keep the frames it did
            raise Failed(frame, times, exc, cpus) from None
        values = smoke.values.numpy("y,z,x")[:, ::-1, :]  # [D, H, W] with row 0 = top, as metaphys lays it out
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        out.append(np.ascontiguousarray(values))
        vmax = max(float(pf.math.max(abs(velocity.values.vector[c]))) for c in ("x", "y", "z"))
        d = float(pf.math.max(abs(pf.field.divergence(velocity).values))) * dx
        div.append(d / vmax if vmax > 0 else 0.0)
    return np.stack(out), times, div, cpus


def centroid(d: np.ndarray, size: float) -> list:
    """Density centroid height (m above the floor) per frame; row 0 = top."""
    h = d.shape[2]
    z = (h - 0.5 - np.arange(h)) * size / h
    w = d.sum(axis=(1, 3))
    return [float((wf * z).sum() / wf.sum()) if wf.sum() > 0 else 0.0 for wf in w]


def main():
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("frames", type=int)
    ap.add_argument("params", nargs="?", default="{}")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--tight", type=float, default=None, help="also run at this tolerance: the error reference")
    ap.add_argument("--save", default=None, help="write the densities [F, D, H, W] here (.npy)")
    args = ap.parse_args()
    p = dict(DEFAULTS, **json.loads(args.params))
    import phi
    base = {"n": args.n, "frames": args.frames, "tol": args.tol, "version": phi.__version__, "params": p}
    try:
        d, times, div, cpus = plume(args.n, args.frames, args.tol, p)
    except Failed as failed:
        print(json.dumps({**base, "error": str(failed), "frames_before_failure": failed.frame,
                          "ms_per_frame_before_failure": 1e3 * float(np.median(failed.times)) if failed.times else None,
                          "ms_max": 1e3 * max(failed.times) if failed.times else None,
                          "cpu_ms_per_frame": 1e3 * float(np.median(failed.cpus)) if failed.cpus else None}))
        return
    out = {**base, "ms": [1e3 * t for t in times], "ms_per_frame": 1e3 * float(np.median(times)),
           "ms_max": 1e3 * max(times), "cpu_ms": [1e3 * c for c in cpus],
           "cpu_ms_per_frame": 1e3 * float(np.median(cpus)), "min_density": float(d.min()), "divergence": max(div),
           "centroid_m": centroid(d, p["size_m"]), "mass": float(d[-1].sum()) * (p["size_m"] / args.n) ** 3}
    if args.save:
        np.save(args.save, d)
    if args.tight:
        try:
            from phi import flow as pf
            pf.math.set_global_precision(64)   # float32 CG stalls above 1e-6 (it "diverges"): the reference in float64
            ref, times_tight, _, _ = plume(args.n, args.frames, args.tight, p)
            out["density_rel_l2"] = float(np.linalg.norm(d - ref) / max(np.linalg.norm(ref), 1e-300))
            out["ms_per_frame_tight"] = 1e3 * float(np.median(times_tight))
            out["tight"] = args.tight
        except Failed as failed:
            out["error_tight"] = str(failed)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
