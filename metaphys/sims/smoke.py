"""2D smoke: incompressible Navier-Stokes (MAC grid, vector potential) + passive density.

Units are grid units: lengths in cells, time in simulation steps (one step per frame by
default), so `buoyancy` is cells/step^2 per unit density. The domain is a closed box with
no-slip walls (`wall` cells thick); obstacles are masks (fixed or per frame) or moving shapes.
Each step: (1) buoyancy + wind + emitter forces are set on the velocity faces, (2) the fluid
step is solved for (a, p) by the optimizer, (3) the density is advected by the solved velocity
(trapezoidal mean) with emitter sources (a converged density step conserves mass to round-off:
the transport is in flux form). Row 0 is the TOP of the domain.

The density step is a LINEAR system A c = b (A = I/dt + transport - diffusion). ``density_tol``
is relative to the density scale: a step stops when dt * ||r||_2 <= density_tol * peak, with r
the residual on the free cells and peak the largest |c| of the warm start. For A close to
I/dt + skew-symmetric (central-difference transport, velocity gradients << 1/dt) ||A^-1|| ~ dt,
so every cell's error against the exact step is about <= density_tol * peak (in practice ~10x
less). The default 1e-6 is tighter than the picture needs because the density feeds back into
the fluid through buoyancy: at 1e-4 a 64^2 plume drifted 1.3e-3 (relative L2 over 48 frames)
from a converged-density run, each GMRES iteration costs ~1 residual evaluation, and 1e-6 adds
~3 of them per frame. Tolerances below 1e-12 act as 1e-12, the float64 round-off floor of the residual. ``density_solver`` picks how the step is solved (benchmarks/results/smoke.md measures them):

* ``"gmres"`` (default): restarted GMRES without preconditioner (metaphys.optim.krylov), warm
  started from the explicitly advected previous density c_old - dt * r(c_old); 4-10 residual
  evaluations per frame, no network call.
* ``"fgmres-metamizer"``: flexible GMRES with 2 Metamizer steps as the preconditioner.
* ``"metamizer"``: the Metamizer iterations of earlier versions, stopped at the mean squared
  residual equivalent to the same bound, (density_tol * peak / dt)^2 / free cells.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.krylov import fgmres, metamizer_preconditioner
from metaphys.optim.solve import iterate
from metaphys.physics.fluid import (FluidProblem, add_obstacle, curl, density_problem, fluid_geometry,
                                    fluid_metrics)
from metaphys.sims.base import Sim, check_state_dict, optimizer_state, restore_optimizer_state
from metaphys.sims.common import (COMMON_ARGUMENTS, SimulationDiverged, SolverSettings, StepRecord, check_threads,
                                  fastest_forward, optimizer_for, torch_threads)
from metaphys.spec.params import SMOKE_SIM_KEYS, smoke_parameters, smoke_sim_kwargs
from metaphys.spec.schema import SMOKE_SCHEMA
from metaphys.spec.types import Choice, Int, Number
from metaphys.spec.validate import argument_error, check_arguments, schema_types

F64 = torch.float64
DENSITY_SOLVERS = ("gmres", "fgmres-metamizer", "metamizer")
DENSITY_TOL_FLOOR = 1e-12
GMRES_RESTART = 40
# SmokeSim's keyword arguments, checked with the bake spec's own types (spec/validate.py): those a
# spec has are the schema's entries; the others (API only) use the same value types
ARGUMENTS = {**COMMON_ARGUMENTS,
             **schema_types(SMOKE_SCHEMA, ("resolution", "iterations_per_step", "tol") + SMOKE_SIM_KEYS,
                            nullable=("iterations_per_step", "obstacle_shapes")),
             "fluid_density": Number(0, lo_open=True, unit="mass per cell"),
             "wall": Int(1, unit="cells"),
             "dt": Number(0, lo_open=True, unit="steps"),
             "density_max_iterations": Int(1),
             "density_solver": Choice(*DENSITY_SOLVERS),
             "emitter_smoothing": Number(0, unit="cells"),
             "batch": Int(1)}


def _frames_array(name: str, value, h: int, w: int) -> Optional[np.ndarray]:
    """None, [H,W] or [F >= 1,H,W] in [0,1] (or a .npy path; values and paths checked by the
    schema's type) -> float64 array."""
    if value is None:
        return None
    arr = np.asarray(np.load(value, allow_pickle=False) if isinstance(value, str) else value, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[-2:] != (h, w) or len(arr) == 0:
        raise argument_error("SmokeSim", name, f"expected shape [{h}, {w}] or [frames >= 1, {h}, {w}] (the "
                                               f"resolution), got shape {list(arr.shape)}")
    if arr.min() < 0 or arr.max() > 1:
        raise argument_error("SmokeSim", name, f"expected values in [0, 1], got range [{arr.min():g}, {arr.max():g}]")
    return arr


class SmokeSim(Sim):
    """Batched 2D smoke simulation (``batch`` independent sims of the same size); one step per frame."""

    step_unit = "frames"

    def __init__(self, resolution: Sequence[int] = (64, 64), *, emitters=None, obstacles=None,
                 obstacle_shapes: Optional[List[dict]] = None, emitter_density: float = 0.1,
                 emitter_velocity: Sequence[float] = (0.0, 0.0), buoyancy: float = 0.02,
                 viscosity: float = 0.01, fluid_density: float = 1.0, density_diffusion: float = 0.0,
                 wind: Sequence[float] = (0.0, 0.0), wall: int = 2, dt: float = 1.0,
                 iterations_per_step: Optional[int] = 20, tol: Optional[float] = None,
                 max_iterations: int = 200, density_tol: float = 1e-6, density_max_iterations: int = 300,
                 density_solver: str = "gmres", emitter_smoothing: float = 1.0, guard: bool = True,
                 batch: int = 1, device="cpu", optimizer=None, weights=None, accelerate: int = DEFAULT_MEMORY,
                 threads: Optional[int] = None):
        a = check_arguments("SmokeSim", ARGUMENTS, locals())  # the arguments as passed: no coercion
        self.h, self.w = int(resolution[0]), int(resolution[1])
        # torch threads while stepping (None: sims.common.threads_for_grid, the rule bakes use too)
        self.threads = check_threads(threads, self.h, self.w)
        self.n = int(batch)
        self.device = torch.device(device)
        # accelerate: the fluid step's subspace acceleration (optim/accelerate.py; 0 = plain)
        self.settings = SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate)
        self.density_tol = float(density_tol)
        self.density_max_iterations = int(density_max_iterations)
        self.density_solver = density_solver
        self.buoyancy, self.viscosity, self.dt = a["buoyancy"], a["viscosity"], a["dt"]
        self.fluid_density, self.density_diffusion = a["fluid_density"], a["density_diffusion"]
        self.emitter_density = a["emitter_density"]
        self.emitter_velocity = torch.tensor(a["emitter_velocity"], dtype=F64)
        self.wind = torch.tensor(a["wind"], dtype=F64)
        if 2 * wall + 3 > min(self.h, self.w):
            raise argument_error("SmokeSim", "wall", f"expected walls that leave room for fluid (2 * wall + 3 <= "
                                                     f"{min(self.h, self.w)} cells), got {wall!r}")
        self.wall = int(wall)
        self.emitters = _frames_array("emitters", emitters, self.h, self.w)
        if self.emitters is None:
            self.emitters = self.default_emitter(self.h, self.w)
        # Smooth emitter edges (Gaussian, in cells): central-difference transport of a hard-edged
        # source overshoots by a few percent of the peak; a 1-cell blur keeps the density >= 0.
        self.emitter_smoothing = a["emitter_smoothing"]
        if self.emitter_smoothing > 0:
            from scipy.ndimage import gaussian_filter
            sig = (0, self.emitter_smoothing, self.emitter_smoothing) if self.emitters.ndim == 3 else self.emitter_smoothing
            self.emitters = gaussian_filter(self.emitters, sig, mode="constant")
        self.obstacles = _frames_array("obstacles", obstacles, self.h, self.w)
        self.obstacle_shapes = list(a["obstacle_shapes"] or [])
        self.optimizer = optimizer_for(optimizer, weights, self.device, fastest=True)
        self.frame = 0
        mask, bc = self._geometry(0)
        self.fluid = FluidProblem(mask, bc, rho=self.fluid_density, mu=self.viscosity, dt=self.dt)
        self.u = self.fluid.initial_guess()
        self.fluid_state = self.optimizer.init_state(tuple(self.u.shape), device=self.device)
        self.density_field = torch.zeros(self.n, 1, self.h, self.w, dtype=F64, device=self.device)
        self.density_state = self.optimizer.init_state((self.n, 1, self.h, self.w), device=self.device)
        self.records: List[StepRecord] = []
        self.density_records: List[StepRecord] = []
        self.injected = torch.zeros(self.n, dtype=F64, device=self.device)

    @classmethod
    def from_spec(cls, spec: dict, *, optimizer=None, device="cpu", size: int = 128) -> "SmokeSim":
        """Build from a bake spec (docs/bake-spec.md)."""
        return cls.from_params(smoke_parameters(spec, size=size), optimizer=optimizer, device=device)

    @classmethod
    def from_params(cls, p: dict, *, optimizer=None, device="cpu", threads: Optional[int] = None) -> "SmokeSim":
        """Build from validated spec parameters (metaphys.spec.params.smoke_parameters), with the
        fastest measured forward pass of the given (or shipped) Metamizer."""
        optimizer = cls.fastest_optimizer(device, optimizer)
        return cls(tuple(p["resolution"]), optimizer=optimizer, device=device, threads=threads,
                   **smoke_sim_kwargs(p))

    @staticmethod
    def fastest_optimizer(device, optimizer=None):
        """The shipped (or given plain) Metamizer with the fastest measured forward pass: on CPU
        the frozen channels_last module of optim/fast.py (same steps to ~1e-6), else as is."""
        return fastest_forward(optimizer_for(optimizer, None, device), device)

    @staticmethod
    def default_emitter(h: int, w: int) -> np.ndarray:
        """A disc at the bottom centre, radius h/10."""
        ii, jj = np.mgrid[0:h, 0:w]
        r = max(2.0, h / 10)
        return (((ii - (h - 4 - r)) ** 2 + (jj - w / 2) ** 2) < r * r).astype(np.float64)

    # --- geometry per frame -------------------------------------------------------------------
    def _pick(self, arr: Optional[np.ndarray], frame: int) -> Optional[np.ndarray]:
        if arr is None:
            return None
        return arr if arr.ndim == 2 else arr[min(frame, arr.shape[0] - 1)]

    def _shape_center(self, shape: dict, frame: int):
        c = np.asarray(shape["center"], dtype=np.float64)
        if c.ndim == 2:
            return c[min(frame, len(c) - 1)], (c[min(frame, len(c) - 1)] - c[max(0, min(frame, len(c) - 1) - 1)])
        return c, np.zeros(2)

    def _geometry(self, frame: int):
        mask, bc = fluid_geometry(self.n, self.h, self.w, kind="box", wall_rows=self.wall, wall_cols=self.wall,
                                  device=self.device)
        obst = self._pick(self.obstacles, frame)
        if obst is not None:
            m = torch.as_tensor(obst >= 0.5, dtype=F64, device=self.device)
            mask = torch.maximum(mask, m.expand_as(mask)).contiguous()
        for s in self.obstacle_shapes:
            center, vel = self._shape_center(s, frame)
            per_step = vel / self.dt  # cells per step -> wall velocity (v_y, v_x) in rows/cols
            if s["type"] == "circle":
                mask, bc = add_obstacle(mask, bc, "circle", center=tuple(center), radius=float(s["radius"]),
                                        velocity=tuple(per_step))
            else:
                mask, bc = add_obstacle(mask, bc, "box", center=tuple(center), half=tuple(s["half"]),
                                        velocity=tuple(per_step))
        return mask, bc

    def _forces(self, emitter: torch.Tensor) -> torch.Tensor:
        """Force density on the (v_y, v_x) faces: buoyancy and wind (+y is up = -rows), emitter push."""
        rho = self.fluid_density
        c = self.density_field
        c_right = torch.nn.functional.pad(c, (0, 1))[..., 1:]     # v_y faces sit at (i, j+1/2)
        wind_x, wind_y = float(self.wind[0]), float(self.wind[1])
        push_x, push_y = float(self.emitter_velocity[0]), float(self.emitter_velocity[1])
        f_y = -self.buoyancy * rho * 0.5 * (c + c_right) - rho * wind_y - rho * push_y * emitter
        f_x = rho * wind_x + rho * push_x * emitter
        return torch.cat([f_y, f_x.expand_as(f_y)], dim=1).contiguous()

    # --- stepping -----------------------------------------------------------------------------
    def step(self) -> StepRecord:
        """Advance one frame with ``threads`` torch threads; returns the fluid step's record."""
        with torch_threads(self.threads):
            return self._step()

    def _step(self) -> StepRecord:
        frame = self.frame
        mask, bc = self._geometry(frame)
        em_np = self._pick(self.emitters, frame)
        emitter = torch.as_tensor(em_np, dtype=F64, device=self.device).expand(self.n, 1, self.h, self.w)
        emitter = emitter * (1 - mask)
        self.fluid.set_boundary(mask=mask, bc=bc, force=self._forces(emitter))
        res = iterate(self.fluid, self.optimizer, self.u, self.fluid_state, guard=self.settings.guard,
                      **self.settings.solve_kwargs())
        self.fluid_state = res.state
        u_new = res.u
        self._refuse_diverged(u_new, None, frame + 1)
        source = self.emitter_density * emitter
        dens = density_problem(self.fluid, u_new, self.density_field * (1 - mask), D=self.density_diffusion,
                               source=source)
        c_new, drec = self._solve_density(dens, frame + 1)
        c_new = dens.impose(c_new)
        self._refuse_diverged(u_new, c_new, frame + 1)
        self.density_field = c_new
        self.injected += (source * self.dt).flatten(1).sum(1)
        self.u = self.fluid.advance(u_new)
        rec = StepRecord(frame + 1, res.iterations, float(res.residual.max()), float(res.residuals[0].max()),
                         res.guard_rejections, res.hit_cap)
        self.records.append(rec)
        self.density_records.append(drec)
        self.last_metrics = fluid_metrics(self.fluid, u_new)
        self.frame += 1
        return rec

    def _refuse_diverged(self, u_new: torch.Tensor, density: Optional[torch.Tensor], frame: int) -> None:
        """Refuse a step the grid cannot resolve (SimulationDiverged naming the cause) instead of
        returning garbage: non-finite values, a flow that crosses the whole domain in one step, or a
        density swinging negative as far as it reaches positive (transport that cannot follow)."""
        domain = max(self.h, self.w)
        if not bool(torch.isfinite(u_new).all()) or (density is not None and not bool(torch.isfinite(density).all())):
            what = "the fluid solve produced non-finite values"
        else:
            vy, vx = curl(u_new[:, 0:1])
            speed = float(torch.maximum(vy.abs().max(), vx.abs().max())) * self.dt
            low = float(density.min()) if density is not None else 0.0
            high = float(density.max()) if density is not None else 0.0
            if speed > domain:
                what = (f"the flow reached {speed:.3g} cells per step, more than the whole {domain}-cell domain in "
                        "one step")
            elif low < -0.5 * high:
                what = f"the density swings to {low:.3g} against a peak of {high:.3g} (the transport cannot follow)"
            else:
                return
        raise SimulationDiverged(
            f"SmokeSim diverged at frame {frame}: {what}; the forces are too strong for the grid -- "
            f"buoyancy={self.buoyancy:g} (cells/step^2 per unit density), emitter_velocity="
            f"{self.emitter_velocity.tolist()}, wind={self.wind.tolist()} (cells/step^2), against the defaults 0.02, "
            "[0, 0] and [0, 0]: smaller forces or a finer grid keep the flow resolved -- or obstacle shapes jump many "
            "cells per frame")

    def _solve_density(self, dens, frame: int):
        """Solve one density step to ``density_tol`` (see the module doc); (c, StepRecord).
        The record's residuals are mean squared residuals over the free cells, as before."""
        dt = dens.fields["dt"]
        tol = max(self.density_tol, DENSITY_TOL_FLOOR)
        free = (1 - dens.fields["mask"]).flatten(1).sum(1).clamp_min(1.0)
        if self.density_solver == "metamizer":
            u0 = dens.initial_guess()
            peak = u0.flatten(1).abs().amax(1)
            msr_tol = float(((tol * peak / dt) ** 2 / free).min().clamp_min(1e-300))
            res = iterate(dens, self.optimizer, u0, self.density_state, tol=msr_tol,
                          max_iterations=self.density_max_iterations, guard=True)
            self.density_state = res.state
            return res.u, StepRecord(frame, res.iterations, float(res.residual.max()), float(res.residuals[0].max()),
                                     res.guard_rejections, res.hit_cap)
        c_old = dens.initial_guess()
        u0 = dens.impose(c_old - dt.view(-1, 1, 1, 1) * dens.residual_field(c_old))  # explicit advection
        peak = torch.maximum(u0.flatten(1).abs().amax(1), c_old.flatten(1).abs().amax(1))
        pre = (metamizer_preconditioner(dens, self.optimizer, steps=2)
               if self.density_solver == "fgmres-metamizer" else None)
        res = fgmres(dens, u0, rtol=0.0, atol=tol * peak / dt, restart=GMRES_RESTART,
                     max_iterations=self.density_max_iterations, preconditioner=pre)
        msr = lambda norm: float((norm ** 2 / free).max())
        return res.u, StepRecord(frame, res.iterations, msr(res.residual_norm), msr(res.residual_norms[0]), 0,
                                 res.hit_cap)

    # --- results ------------------------------------------------------------------------------
    @property
    def density(self) -> np.ndarray:
        """[H, W] (batch 1) or [N, H, W] density on the grid corners, row 0 = top."""
        d = self.density_field[:, 0].cpu().numpy()
        return d[0] if self.n == 1 else d

    field = density  # the protocol's result name (sims/base.py)

    @property
    def velocity(self) -> np.ndarray:
        """Cell-centred velocity (vx, vy) with vy pointing UP: [H, W, 2] (or [N, H, W, 2])."""
        from metaphys.physics.fluid import corner_velocity
        v = corner_velocity(self.fluid, self.u, which="new").cpu().numpy()
        out = np.stack([v[:, 1], -v[:, 0]], axis=-1)
        return out[0] if self.n == 1 else out

    @property
    def pressure(self) -> np.ndarray:
        p = self.u[:, 1].cpu().numpy()
        return p[0] if self.n == 1 else p

    def total_density(self) -> torch.Tensor:
        return self.density_field.flatten(1).sum(1)

    # --- resumable state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically (used by resumable bakes)."""
        return {"fields": {k: v.clone() for k, v in self.fluid.fields.items()}, "u": self.u.clone(),
                "fluid_state": optimizer_state(self.optimizer, self.fluid_state),
                "density_field": self.density_field.clone(),
                "density_state": optimizer_state(self.optimizer, self.density_state), "injected": self.injected.clone(),
                "frame": self.frame, "records": [r.as_dict() for r in self.records],
                "density_records": [r.as_dict() for r in self.density_records]}

    def load_state_dict(self, sd: dict) -> None:
        check_state_dict(self, sd, ("fields", "u", "fluid_state", "density_field", "density_state", "injected",
                                    "frame", "records", "density_records"),
                         shapes={"u": self.u.shape, "density_field": self.density_field.shape})
        self.fluid.fields = {k: v.to(self.device) for k, v in sd["fields"].items()}
        self.u = sd["u"].to(self.device)
        self.fluid_state = restore_optimizer_state(self.optimizer, sd["fluid_state"], self.u.shape, self.device)
        self.density_field = sd["density_field"].to(self.device)
        self.density_state = restore_optimizer_state(self.optimizer, sd["density_state"], self.density_field.shape,
                                                     self.device)
        self.injected = sd["injected"].to(self.device)
        self.frame = int(sd["frame"])
        self.records = [StepRecord(**r) for r in sd["records"]]
        self.density_records = [StepRecord(**r) for r in sd["density_records"]]

    def finite(self) -> bool:
        return bool(torch.isfinite(self.u).all()) and bool(torch.isfinite(self.density_field).all())
