"""Cloth for animation: a regular rows x cols vertex grid in physical units (metres, seconds, kg).

Materials are physical and resolution-free (names follow Blender's cloth panel where they map):
``tension`` and ``shear`` are membrane stiffnesses in N/m (force per unit width per unit strain /
shear angle), ``bending`` is a bending stiffness in N*m, ``mass_per_area`` is in kg/m^2 and
``air_damping`` in 1/s. One material therefore behaves the same at 16^2 ... 128^2 and at any
fps / substeps. Internally the cloth is solved in the units the Metamizer was trained in
(length = the mean rest edge length L0, time = one solver step dt, mass = the mass of an interior
vertex rho*L0^2); the mapping (``physics.cloth.model_material``) is applied only here:

    k_stretch = Y dt^2 / (2 rho L0^2) * (edges per direction) / (H W)
    k_shear   = G dt^2 / (8 rho L0^2)        k_bend = B dt^2 / (2 rho L0^4)
    gravity, wind (m/s^2) -> * dt^2 / L0       air_damping (1/s) -> * dt

Solvers per step (``solver``): "metamizer" (the network's iterations only), "newton" (the
converged reference, ``metaphys.optim.newton``) or "auto" (default): the Metamizer runs its
``iterations_per_step`` and stops early at ``tol``; if it has not reached ``tol``, Newton's method
finishes the step. ``tol`` is the scale-free gauge every frame records: the gradient RMS
relative to the larger of the step's starting gradient and the external (gravity + wind)
forces. Every ``StepRecord`` carries that relative residual, the max edge strain, and which
solver finished the frame.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.newton import NewtonSolver
from metaphys.optim.solve import iterate
from metaphys.physics.cloth import ClothProblem, model_material
from metaphys.sims.base import Sim, optimizer_state, restore_optimizer_state
from metaphys.sims.common import (SolverSettings, StepRecord, check_positive, check_threads, check_vector,
                                  optimizer_for, torch_threads)
from metaphys.spec.params import cloth_parameters, cloth_sim_kwargs

F64 = torch.float64
SOLVERS = ("auto", "metamizer", "newton")


def _grid_int(name, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 16:
        raise ValueError(f"{name} must be an int >= 16 (the optimizer's minimum grid), got {v!r}")
    return int(v)


def flat_cloth(rows: int, cols: int, size_m: float = 1.0, height: float = 1.0,
               plane: str = "xy") -> np.ndarray:
    """Rest positions [rows*cols, 3], row-major: a square ``size_m`` wide, horizontal (plane
    'xy' at z = height) or hanging (plane 'xz', top row at z = height)."""
    jj, ii = np.meshgrid(np.linspace(0, size_m, cols), np.linspace(0, size_m * (rows - 1) / max(cols - 1, 1), rows))
    if plane == "xy":
        pos = np.stack([jj - size_m / 2, ii - ii.max() / 2, np.full_like(ii, height)], -1)
    elif plane == "xz":
        pos = np.stack([jj - size_m / 2, np.zeros_like(ii), height - ii], -1)
    else:
        raise ValueError(f"plane must be 'xy' or 'xz', got {plane!r}")
    return pos.reshape(-1, 3)


class ClothSim(Sim):
    step_unit = "frames"

    def __init__(self, rows: int = 32, cols: int = 32, *, rest_positions=None, size_m: float = 1.0,
                 fps: float = 24.0, substeps: int = 1, gravity: Sequence[float] = (0.0, 0.0, -9.81),
                 mass_per_area: float = 0.2, tension: float = 250.0, shear: float = 10.0, bending: float = 2.5e-5,
                 air_damping: float = 0.1, wind: Sequence[float] = (0.0, 0.0, 0.0), pin_weights=None,
                 pin_targets=None, colliders: Optional[List[dict]] = None, contact_margin: float = 0.25,
                 solver: str = "auto", tol: Optional[float] = 1e-8, iterations_per_step: Optional[int] = 30,
                 max_iterations: int = 200, newton_max_iterations: int = 100, strain_limit: float = 0.5,
                 guard: bool = True, device="cpu", optimizer=None, threads: Optional[int] = None,
                 line_search: bool = False, accelerate: int = DEFAULT_MEMORY, weights=None):
        rows, cols = _grid_int("rows", rows), _grid_int("cols", cols)
        self.rows, self.cols = rows, cols
        nv = rows * cols
        self.device = torch.device(device)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if tol is None and solver != "metamizer":
            raise ValueError(f"solver {solver!r} needs a tolerance tol > 0 (tol=None only with solver='metamizer')")
        self.solver = solver
        self.tol = None if tol is None else check_positive("tol", tol)
        if solver == "newton":
            self.settings = SolverSettings(1, None, max_iterations, guard, accelerate)
        else:
            self.settings = SolverSettings(iterations_per_step, self.tol if iterations_per_step is None else None,
                                           max_iterations, guard, accelerate)
        self.newton_max_iterations = int(newton_max_iterations)
        # along the Metamizer's steps (issue #13); the subspace acceleration (accelerate=m, default
        # on) replaces it: at 32^2, 100 it/frame, relative residual 3e-2 -> 1e-5 (curtain scene)
        self.line_search = bool(line_search)
        self.strain_limit = check_positive("strain_limit", strain_limit)
        self.threads = check_threads(threads, rows, cols)
        self.fps = check_positive("fps", fps)
        if isinstance(substeps, bool) or not isinstance(substeps, (int, np.integer)) or substeps < 1:
            raise ValueError(f"substeps must be a positive int, got {substeps!r}")
        self.substeps = int(substeps)
        self.dt = 1.0 / (self.fps * self.substeps)
        rest = flat_cloth(rows, cols, size_m) if rest_positions is None else np.asarray(rest_positions, np.float64)
        if rest.shape != (nv, 3) or not np.isfinite(rest).all():
            raise ValueError(f"rest_positions must be finite with shape ({nv}, 3) (rows*cols, xyz), got {rest.shape}")
        grid = rest.reshape(rows, cols, 3)
        edges = np.concatenate([np.linalg.norm(np.diff(grid, axis=0), axis=-1).ravel(),
                                np.linalg.norm(np.diff(grid, axis=1), axis=-1).ravel()])
        if edges.min() <= 0:
            raise ValueError("rest_positions has zero-length edges (coincident neighbouring vertices)")
        self.length_unit = float(edges.mean())
        self.rest_positions = rest
        self.gravity = check_vector("gravity", gravity, 3)
        self.wind = check_vector("wind", wind, 3)
        self.material = {"tension": check_positive("tension", tension),
                         "shear": check_positive("shear", shear, allow_zero=True),
                         "bending": check_positive("bending", bending, allow_zero=True),
                         "mass_per_area": check_positive("mass_per_area", mass_per_area),
                         "air_damping": check_positive("air_damping", air_damping, allow_zero=True)}
        self.pin_w = self._pin_weights(pin_weights)
        self.pin_targets = self._pin_targets(pin_targets)
        self.colliders = self._colliders(colliders or [])
        # Newton alone needs no optimizer: none is loaded unless one is given
        needs_optimizer = solver != "newton" or optimizer is not None or weights is not None
        self.optimizer = optimizer_for(optimizer, weights, self.device) if needs_optimizer else None
        self.newton = NewtonSolver(tol=self.tol or 1e-10, max_iterations=self.newton_max_iterations)
        k = model_material(self.material, rows, cols, self.length_unit, self.dt)
        scale = self.dt ** 2 / self.length_unit
        self.problem = ClothProblem(
            self._to_model(rest), pin_w=self._grid1(self.pin_w),
            pin_x=self._to_model(self._targets_at(0.0)),
            gravity=(self.gravity * scale).tolist(), wind=(self.wind * scale).tolist(),
            k_stretch=k["k_stretch"], k_shear=k["k_shear"], k_bend=k["k_bend"], mass=1.0,
            damping=self.material["air_damping"] * self.dt, margin=float(contact_margin),
            k_contact=max(1000.0, k["k_stretch"]), k_pin=max(1000.0, k["k_stretch"]), dt=1.0)
        self._set_colliders(0.0)
        self.u = self.problem.initial_guess()
        self.state = None if self.optimizer is None else self.optimizer.init_state(tuple(self.u.shape),
                                                                                 device=self.device)
        self.a_prev = self.u.clone()   # the last step's acceleration: Newton's warm start
        self._metamizer_misses = 0     # consecutive steps the Metamizer stage missed tol ("auto")
        self._substep_count = 0
        self.frame = 0
        self.records: List[StepRecord] = []

    # --- construction helpers ---------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: dict, *, optimizer=None, device="cpu", size: int = 32) -> "ClothSim":
        """Build from a bake spec (docs/bake-spec.md)."""
        return cls.from_params(cloth_parameters(spec, size=size), optimizer=optimizer, device=device)

    @classmethod
    def from_params(cls, p: dict, *, optimizer=None, device="cpu", threads: Optional[int] = None) -> "ClothSim":
        """Build from validated spec parameters (metaphys.spec.params.cloth_parameters)."""
        rest = p.get("rest_positions")
        if rest is None:
            rest = flat_cloth(p["rows"], p["cols"], p["size_m"], p["height"])
        kwargs = cloth_sim_kwargs(p)
        if threads is not None:
            kwargs["threads"] = threads
        return cls(p["rows"], p["cols"], rest_positions=rest, device=device, optimizer=optimizer, **kwargs)

    def _pin_weights(self, w):
        nv = self.rows * self.cols
        if w is None:
            w = np.zeros(nv)
            w[0] = w[self.cols - 1] = 1.0  # the two corners of the first row
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if w.shape != (nv,):
            raise ValueError(f"pin_weights must have rows*cols = {nv} entries, got {w.shape[0]}")
        if not np.isfinite(w).all() or w.min() < 0 or w.max() > 1:
            bad = int(np.argmax(~np.isfinite(w) | (w < 0) | (w > 1)))
            raise ValueError(f"pin_weights must be in [0, 1], got {w[bad]} at vertex {bad}")
        return w

    def _pin_targets(self, t):
        nv = self.rows * self.cols
        if t is None:
            return self.rest_positions[None]
        t = np.asarray(t, dtype=np.float64)
        if t.shape == (nv, 3):
            t = t[None]
        if t.ndim != 3 or t.shape[1:] != (nv, 3) or not np.isfinite(t).all():
            raise ValueError(f"pin_targets must be finite with shape ({nv}, 3) or (frames, {nv}, 3), got {t.shape}")
        return t

    def _colliders(self, colliders):
        out = []
        for k, c in enumerate(colliders):
            kind = c.get("type")
            center = np.asarray(c.get("center"), dtype=np.float64)
            if center.shape[-1:] != (3,) or center.ndim not in (1, 2) or not np.isfinite(center).all():
                raise ValueError(f"colliders[{k}].center must be [x,y,z] or a per-frame list of them")
            if kind == "sphere":
                r = c.get("radius")
                if r is None or not (float(r) > 0):
                    raise ValueError(f"colliders[{k}].radius must be > 0, got {r!r}")
                out.append({"type": "sphere", "center": np.atleast_2d(center), "radius": float(r)})
            elif kind == "box":
                he = np.asarray(c.get("half_extents"), dtype=np.float64)
                if he.shape != (3,) or (he <= 0).any():
                    raise ValueError(f"colliders[{k}].half_extents must be three positive numbers")
                out.append({"type": "box", "center": np.atleast_2d(center), "half_extents": he})
            else:
                raise ValueError(f"colliders[{k}].type must be 'sphere' or 'box', got {kind!r}")
        return out

    # --- unit conversions ---------------------------------------------------------------------
    def _grid1(self, w):
        return torch.as_tensor(w, dtype=F64, device=self.device).view(1, 1, self.rows, self.cols)

    def _to_model(self, pos: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(pos / self.length_unit, dtype=F64, device=self.device)
        return t.view(self.rows, self.cols, 3).permute(2, 0, 1).unsqueeze(0).contiguous()

    def _to_world(self, x: torch.Tensor) -> np.ndarray:
        return (x[0].permute(1, 2, 0).reshape(-1, 3).cpu().numpy() * self.length_unit)

    @staticmethod
    def _interp(track: np.ndarray, t: float) -> np.ndarray:
        """Value of a per-frame track at fractional frame index t (clamped at the ends)."""
        if len(track) == 1:
            return track[0]
        t = min(max(t, 0.0), len(track) - 1.0)
        k = int(math.floor(t))
        f = t - k
        return track[k] if f == 0 or k + 1 >= len(track) else (1 - f) * track[k] + f * track[k + 1]

    def _targets_at(self, t: float) -> np.ndarray:
        return self._interp(self.pin_targets, t)

    def _set_colliders(self, t: float):
        spheres = [np.r_[self._interp(c["center"], t) / self.length_unit, c["radius"] / self.length_unit]
                   for c in self.colliders if c["type"] == "sphere"]
        boxes = [np.r_[self._interp(c["center"], t) / self.length_unit, c["half_extents"] / self.length_unit]
                 for c in self.colliders if c["type"] == "box"]
        self.problem.set_colliders(spheres=torch.tensor(np.array(spheres).reshape(1, -1, 4), dtype=F64),
                                   boxes=torch.tensor(np.array(boxes).reshape(1, -1, 6), dtype=F64))

    # --- stepping -----------------------------------------------------------------------------
    def step(self) -> StepRecord:
        """Advance one frame (``substeps`` solver steps); returns the frame's record."""
        with torch_threads(self.threads):
            return self._step()

    def _solve_substep(self):
        """One backward-Euler step: Metamizer, then (per ``solver``) Newton's finishing stage.
        Returns (a, Metamizer iterations, guard rejections, hit_cap, gradient RMS at the start,
        relative residual at the end, Newton iterations, the solver that finished)."""
        p = self.problem
        _, grad0 = p.loss_and_grad(self.u)
        scale = p.residual_scale(grad0)
        rms = lambda g: float(g[0].norm()) / math.sqrt(g[0].numel())
        iters = rej = newton_iters = 0
        cap = False
        a = self.u
        # "auto": the Metamizer's iterations are wasted when Newton finishes anyway (its answer is
        # not Newton's start); after 3 misses in a row it only tries every 8th step
        retry = self._metamizer_misses < 3 or self._substep_count % 8 == 0
        self._substep_count += 1
        if self.solver == "metamizer" or (self.solver == "auto" and retry):
            kwargs = self.settings.solve_kwargs()
            if self.tol is not None and "iterations" in kwargs:  # early stop at the gauge's tolerance
                kwargs = {"tol": self.tol * scale, "max_iterations": kwargs["iterations"],
                          "accelerate": kwargs["accelerate"]}
            res = iterate(p, self.optimizer, a, self.state, guard=self.settings.guard,
                          guard_growth=0.0, line_search=self.line_search, **kwargs)
            self.state, a = res.state, res.u
            iters, rej, cap = res.iterations, res.guard_rejections, res.hit_cap
        _, grad = p.loss_and_grad(a)
        rel = rms(grad) / scale
        finished_by = "metamizer"
        if self.solver == "auto" and retry:
            self._metamizer_misses = 0 if rel <= self.tol else self._metamizer_misses + 1
        if self.solver != "metamizer" and rel > self.tol:
            # warm start: the lower-energy of the last step's acceleration and that acceleration
            # projected out of the colliders -- the same start in "auto" and "newton", so the
            # finishing stage lands on the reference's minimum. (Starting from the Metamizer's
            # unconverged answer was measured to land in another local minimum of the step's
            # energy with contact: 1.6 edge lengths from the reference's step.)
            prev = p.impose(self.a_prev)
            guesses = [prev, p.project_out_of_colliders(prev)]
            energies = [float(p.loss_and_grad(c)[0][0]) for c in guesses]
            a = guesses[int(np.argmin(energies))]
            out = self.newton.solve(p, a, scale=scale)
            a, rel, newton_iters = out.u, out.residuals[-1], out.iterations
            finished_by = "newton"
            cap = not out.converged
        return a, iters, rej, cap, rms(grad0), rel, newton_iters, finished_by

    def _step(self) -> StepRecord:
        iters = rej = newton_iters = 0
        cap = False
        start = rel_worst = 0.0
        finished_by = "metamizer"
        strain = -1.0
        for s in range(self.substeps):
            t = self.frame + (s + 1) / self.substeps  # targets/colliders at the END of the substep
            self.problem.set_pins(pin_x=self._to_model(self._targets_at(t)))
            self._set_colliders(t)
            a, it, rj, hc, g0, rel, nit, fin = self._solve_substep()
            start = g0 if s == 0 else start
            rel_worst = max(rel_worst, rel)
            iters, rej, newton_iters, cap = iters + it, rej + rj, newton_iters + nit, cap or hc
            finished_by = "newton" if fin == "newton" else finished_by
            self.a_prev = a.detach().clone()
            self.u = self.problem.advance(a)
            strain = max(strain, float(self.problem.max_stretch().max()))
        self.frame += 1
        rec = StepRecord(self.frame, iters, rel_worst, start, rej, cap, relative_residual=rel_worst, max_strain=strain,
                         finished_by=finished_by, newton_iterations=newton_iters,
                         converged=None if self.tol is None else bool(rel_worst <= self.tol))
        self.records.append(rec)
        return rec

    # --- results ------------------------------------------------------------------------------
    @property
    def positions(self) -> np.ndarray:
        """Current world positions [rows, cols, 3] in metres."""
        return self._to_world(self.problem.fields["x_old"]).reshape(self.rows, self.cols, 3)

    @property
    def field(self) -> np.ndarray:
        """The protocol's result (sims/base.py): world positions [rows*cols, 3], grid order."""
        return self.positions.reshape(-1, 3)

    def max_stretch(self) -> float:
        return float(self.problem.max_stretch().max()) * 1.0

    def finite(self) -> bool:
        return bool(torch.isfinite(self.problem.fields["x_old"]).all())

    def state_dict(self) -> dict:
        return {"fields": {k: v.clone() for k, v in self.problem.fields.items()}, "u": self.u.clone(),
                "state": optimizer_state(self.optimizer, self.state), "frame": self.frame,
                "a_prev": self.a_prev.clone(), "metamizer_misses": self._metamizer_misses,
                "substep_count": self._substep_count,
                "records": [r.as_dict() for r in self.records]}

    def load_state_dict(self, sd: dict) -> None:
        self.problem.fields = {k: v.to(self.device) for k, v in sd["fields"].items()}
        self.u = sd["u"].to(self.device)
        self.state = (None if self.optimizer is None else
                      restore_optimizer_state(self.optimizer, sd["state"], self.u.shape, self.device))
        self.a_prev = sd.get("a_prev", torch.zeros_like(self.u)).to(self.device)
        self._metamizer_misses = int(sd.get("metamizer_misses", 0))
        self._substep_count = int(sd.get("substep_count", 0))
        self.frame = int(sd["frame"])
        self.records = [StepRecord(**r) for r in sd["records"]]
