"""The paper's other systems through the same API: DiffusionSim, WaveSim, BurgersSim, solve_poisson.

Each wraps a batched Problem and a step solver (``step_solver``: by default the Metamizer loop of
its settings, ``optim.step_solvers.MetamizerStep``, the optimizer state carried across steps as in
``TimeStepper``; or one given ready-made, ``step_solver=``, e.g. ``KrylovStep`` for diffusion)
and follows the sim protocol (sims/base.py):
``step()`` advances one time step, ``run(n)`` returns ``field`` after every step, ``records`` holds
iterations and residual per step, ``state_dict()`` / ``load_state_dict()`` continue bit for bit.
Fields are numpy arrays [H, W] (batch 1) or [N, H, W]; row 0 is the top of the grid.
``weights=`` (a path to TorchScript weights) or ``optimizer=`` choose the optimizer (default: the
shipped Metamizer, self-tested at load); ``threads=`` the torch threads a step runs on (default: the
rule every sim uses, ``sims.common.threads_for_grid``). Arguments are checked with the bake spec's
value types (spec/validate.py): a wrong one is an ArgumentError naming it, never coerced. A step whose residual or field blows up ends the sim with a
``SimulationDiverged`` error naming the step and the residual, never a silently huge number.
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np
import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.solve import DivergenceError, solve
from metaphys.optim.step_solvers import MetamizerStep, initial_state, load_solver_state
from metaphys.physics import BurgersProblem, DiffusionProblem, LaplaceProblem, WaveProblem, frame_mask
from metaphys.sims.base import (Sim, check_state_dict, optimizer_state, restore_optimizer_state, step_residuals,
                                with_solver_state)
from metaphys.sims.common import (COMMON_ARGUMENTS, SimulationDiverged, SolverSettings, StepRecord, check_threads,
                                  optimizer_for, refuse_solver_settings, torch_threads)
from metaphys.spec.types import Array, Int, Invalid, Number, Type, Vector
from metaphys.spec.validate import argument_error, check_arguments, check_value

F64 = torch.float64
__all__ = ["DiffusionSim", "WaveSim", "BurgersSim", "solve_poisson", "SimulationDiverged"]


# ---- argument types (the bake spec's vocabulary: spec/types.py, spec/validate.py) ------------------
class PerSample(Type):
    """A number, or a list of them, one per sample of a batched sim (D, dt, c, mu)."""

    def __init__(self, number: Number):
        self.number = number

    def describe(self):
        return f"{self.number.describe()}, or a list of them (one per sample)"

    def check(self, value, path):
        if not isinstance(value, list):
            return self.number.check(value, path)
        if not value:
            self.fail(value, path)
        try:
            return [self.number.check(v, path) for v in value]
        except Invalid:
            self.fail(value, path)


class GridField(Type):
    """A number, or finite real numbers over the grid (numpy, torch or nested lists; the shape is
    checked against the grid by ``_grid_tensor``)."""

    takes_arrays = True  # spec.validate keeps numpy arrays as they are

    def __init__(self, what: str, number_ok: bool = True, nullable: bool = True, lo=None, hi=None):
        self.what, self.number_ok, self.nullable = what, number_ok, nullable
        self.array = Array(what, nullable=False, lo=lo, hi=hi)
        self.number = Number(lo, hi)

    def describe(self):
        return ("a number or " if self.number_ok else "") + self.what + (" or None" if self.nullable else "")

    def check(self, value, path):
        if value is None and self.nullable:
            return None
        if self.number_ok and np.ndim(value) == 0 and not isinstance(value, str):
            return self.number.check(value.item() if isinstance(value, np.ndarray) else value, path)
        if not isinstance(value, (list, tuple, np.ndarray)):
            self.fail(value, path)
        return self.array.check(value, path)  # finite real numbers (in range), or which entry is not


SHAPE = Vector(2, "cells", lo=16, integer=True, names="(rows, cols)")
_SCALAR = "an array [H, W] or [N, H, W] (N = batch)"
ARGUMENTS = {**COMMON_ARGUMENTS,
             "shape": SHAPE, "batch": Int(1),
             "D": PerSample(Number(0, unit="cells^2/step")),
             "c": PerSample(Number(0, unit="cells/step")),
             "mu": PerSample(Number(0, unit="cells^2/step")),
             "dt": PerSample(Number(0, lo_open=True)),
             "velocity": GridField("an array [2, H, W] or [N, 2, H, W] of (v_y, v_x) in cells/step", number_ok=False),
             "source": GridField(_SCALAR), "bc": GridField(_SCALAR, nullable=False),
             "mask": GridField("an array [H, W] or [N, H, W] of 0 (free) and 1 (Dirichlet)", number_ok=False,
                               lo=0, hi=1),
             "c0": GridField(_SCALAR), "x0": GridField(_SCALAR), "v0": GridField(_SCALAR),
             "f": GridField(_SCALAR, number_ok=False, nullable=False),
             "iterations": COMMON_ARGUMENTS["iterations_per_step"]}
BURGERS_V0 = GridField("an array [2, H, W] or [N, 2, H, W] of (u, v) velocities in cells/step", number_ok=False,
                       nullable=False)


def _grid_tensor(owner: str, name: str, value, n: int, channels: int, h: int, w: int, device, binary: bool = False):
    """A checked argument (a number, None or an array) as what the Problem takes: None, a float or
    a [N|1, channels|1, H, W] tensor; its shape against the grid and batch checked here, so a
    mismatch names the argument instead of failing inside the physics. ``binary``: only 0 and 1."""
    if value is None or isinstance(value, float):
        return value
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 2 and channels == 1:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = arr[:, None] if channels == 1 else arr[None]
    lead = f"[{channels}, {h}, {w}] or [{n}, {channels}, {h}, {w}]" if channels > 1 else \
        f"[{h}, {w}] or [{n}, {h}, {w}]"
    if arr.ndim != 4 or arr.shape[-2:] != (h, w) or arr.shape[0] not in (1, n) or arr.shape[1] not in (1, channels):
        raise argument_error(owner, name, f"expected shape {lead} (the grid is {h} x {w}, batch {n}), got shape "
                                          f"{list(np.shape(value))}")
    if binary and not np.isin(arr, (0.0, 1.0)).all():
        raise argument_error(owner, name, "expected only 0 (free) and 1 (Dirichlet) values")
    return torch.as_tensor(arr, dtype=F64, device=device).contiguous()


def _check_grid(owner: str, name: str, h: int, w: int) -> None:
    """A grid given by an array (BurgersSim's v0, solve_poisson's f) of at least the optimizer's 16 x 16."""
    if min(h, w) < 16:
        raise argument_error(owner, name, f"expected a grid of at least 16 x 16 cells (the optimizer's smallest), "
                                          f"got {h} x {w}")


def _mask(owner, mask, n, h, w, device):
    if mask is None:
        return frame_mask(n, h, w, device=device)
    return _grid_tensor(owner, "mask", mask, n, 1, h, w, device, binary=True).expand(n, 1, h, w).contiguous()


def _per_sample(owner: str, name: str, value, n: int):
    """A checked PerSample value as the Problem takes it (a number, or a tensor of one per sample)."""
    if not isinstance(value, list):
        return value
    if len(value) != n:
        raise argument_error(owner, name, f"expected a number or {n} of them (one per sample, batch {n}), "
                                          f"got {len(value)}")
    return torch.tensor(value, dtype=F64)


class _PDESim(Sim):
    problem = None

    def __init__(self, problem, optimizer, settings: SolverSettings, rescale_on_step=None, weights=None,
                 threads: Optional[int] = None, step_solver=None):
        self.problem = problem
        self.settings = settings
        # torch threads while stepping (None: sims.common.threads_for_grid, the rule of every sim)
        self.threads = check_threads(threads, *problem.shape[-2:])
        if step_solver is None:
            step_solver = MetamizerStep(optimizer_for(optimizer, weights, problem.device),
                                        rescale_on_step=rescale_on_step, **settings.step_solver_kwargs())
        self.step_solver = step_solver
        self.u = problem.initial_guess()                     # the next step's start
        self.state = initial_state(step_solver, self.u)      # the step solver's carried state
        self.records: List[StepRecord] = []

    def step(self) -> StepRecord:
        """Advance one time step with ``threads`` torch threads; returns its record."""
        with torch_threads(self.threads):
            return self._step()

    def _step(self) -> StepRecord:
        number = len(self.records) + 1
        name = type(self).__name__
        scale = float(self._unknown_scale())
        try:
            res = self.step_solver.solve(self.problem, self.u, self.state)
            r0, r1 = step_residuals(self.problem, self.u, res)
            self.state = res.state
            self.u = self.problem.advance(res.u)
        except DivergenceError as exc:
            raise SimulationDiverged(f"{name} diverged at step {number}: {exc}") from None
        rec = StepRecord(number, res.iterations, float(r1.max()), float(r0.max()), res.guard_rejections, res.hit_cap)
        self._check_sane(name, rec, scale)
        self.records.append(rec)
        return rec

    def _unknown_scale(self):
        """max |field| before the step (>= 1): the residual is in the field's units squared, so the
        divergence threshold scales with it (a diffusion of 1e4 units is not a blow-up)."""
        f = self._state_tensor()
        return max(1.0, float(f.abs().max())) if bool(torch.isfinite(f).all()) else 1.0

    def _check_sane(self, name, rec, scale):
        limit = float(getattr(self.problem, "divergence_threshold", 1e6)) * scale ** 2
        field_ok = bool(torch.isfinite(self._state_tensor()).all())
        if not (math.isfinite(rec.residual) and field_ok):
            raise SimulationDiverged(
                f"{name} diverged at step {rec.frame}: non-finite values (residual {rec.residual:.3e}, started the "
                f"step at {rec.residual_start:.3e}); use a smaller dt, smaller initial values or more iterations "
                "per step")
        if rec.residual > limit:
            raise SimulationDiverged(
                f"{name} diverged at step {rec.frame}: residual {rec.residual:.3e} (started the step at "
                f"{rec.residual_start:.3e}) exceeds {limit:.1e} (the divergence threshold "
                f"{self.problem.divergence_threshold:g} x max(1, max|field|)^2 = {scale:.3g}^2); the step "
                "cannot be solved as set up: use a smaller dt or smaller initial values")

    def _state_tensor(self):
        raise NotImplementedError

    def finite(self) -> bool:
        return bool(torch.isfinite(self._state_tensor()).all())

    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit: the problem's fields, the next step's start, the
        optimizer's state (and what the step solver keeps), the records."""
        sd = {"fields": {k: v.clone() for k, v in self.problem.fields.items()}, "u": self.u.clone(),
              "state": optimizer_state(self.optimizer, self.state), "records": [r.as_dict() for r in self.records]}
        return with_solver_state(sd, self.step_solver)

    def load_state_dict(self, sd: dict) -> None:
        check_state_dict(self, sd, ("fields", "u", "state", "records"), shapes={"u": self.u.shape})
        device = self.problem.device
        self.problem.fields = {k: v.to(device) for k, v in sd["fields"].items()}
        self.u = sd["u"].to(device)
        self.state = (None if self.optimizer is None else
                      restore_optimizer_state(self.optimizer, sd["state"], self.u.shape, device))
        load_solver_state(self.step_solver, self.problem, sd)
        self.records = [StepRecord(**r) for r in sd["records"]]

    @staticmethod
    def _np(t):
        a = t.detach().cpu().numpy()
        return a[0] if a.shape[0] == 1 else a


class DiffusionSim(_PDESim):
    """Advection-diffusion of a scalar (velocity channels: (v_y, v_x) in cells/step)."""

    def __init__(self, shape=(64, 64), *, D=0.1, velocity=None, source=None, mask=None, bc=0.0, c0=None,
                 dt=1.0, batch=1, iterations_per_step: Optional[int] = 20, tol=None, max_iterations=200,
                 guard=True, device="cpu", optimizer=None, weights=None, accelerate: int = DEFAULT_MEMORY,
                 threads: Optional[int] = None, step_solver=None):
        a = check_arguments("DiffusionSim", ARGUMENTS, locals())  # the arguments as passed: no coercion
        refuse_solver_settings("DiffusionSim", DiffusionSim.__init__, locals())
        h, w = a["shape"]
        field = lambda name, channels=1: _grid_tensor("DiffusionSim", name, a[name], batch, channels, h, w, device)
        problem = DiffusionProblem(_mask("DiffusionSim", a["mask"], batch, h, w, device), field("bc"),
                                   c_old=field("c0"), velocity=field("velocity", 2), source=field("source"),
                                   D=_per_sample("DiffusionSim", "D", a["D"], batch),
                                   dt=_per_sample("DiffusionSim", "dt", a["dt"], batch))
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate),
                         weights=weights, threads=threads, step_solver=step_solver)

    def _state_tensor(self):
        return self.problem.fields["c_old"]

    @property
    def field(self):
        return self._np(self.problem.fields["c_old"][:, 0])


class WaveSim(_PDESim):
    """Wave equation for a height field from the initial state ``x0`` (heights, [H, W] or [N, H, W];
    default 0) and ``v0`` (vertical velocities; default 0); ``boundary(t)`` may return new Dirichlet
    heights per step (a number or [H, W])."""

    def __init__(self, shape=(64, 64), *, x0=None, v0=None, c=1.0, mask=None, bc=0.0, boundary=None, dt=1.0,
                 batch=1, iterations_per_step: Optional[int] = 20, tol=None, max_iterations=200, guard=True,
                 device="cpu", optimizer=None, weights=None, accelerate: int = DEFAULT_MEMORY,
                 threads: Optional[int] = None, step_solver=None):
        a = check_arguments("WaveSim", ARGUMENTS, locals())  # the arguments as passed: no coercion
        refuse_solver_settings("WaveSim", WaveSim.__init__, locals())
        if boundary is not None and not callable(boundary):
            raise argument_error("WaveSim", "boundary", f"expected a function of the step number returning the "
                                                        f"Dirichlet heights, or None, got {boundary!r}")
        h, w = a["shape"]
        field = lambda name: _grid_tensor("WaveSim", name, a[name], batch, 1, h, w, device)
        problem = WaveProblem(_mask("WaveSim", a["mask"], batch, h, w, device), field("bc"), x_old=field("x0"),
                              v_old=field("v0"), c=_per_sample("WaveSim", "c", a["c"], batch), dt=_per_sample("WaveSim", "dt", a["dt"], batch))
        self.boundary = boundary
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate),
                         weights=weights, threads=threads, step_solver=step_solver)

    def _state_tensor(self):
        return self.problem.fields["x_old"]

    def _step(self):
        if self.boundary is not None:
            self.problem.set_boundary_values(self._boundary_values(len(self.records) + 1))
        return super()._step()

    def _boundary_values(self, t: int):
        """``boundary(t)`` checked like ``bc`` (a number or [H, W]), so a bad return names the function."""
        checked = check_value("WaveSim", "boundary", ARGUMENTS["bc"], self.boundary(t), f"boundary({t}) returned: ")
        return _grid_tensor("WaveSim", "boundary", checked, 1, 1, *self.problem.shape[-2:], self.problem.device)

    @property
    def field(self):
        return self._np(self.problem.fields["x_old"][:, 0])


class BurgersSim(_PDESim):
    """2D coupled Burgers (periodic stencils); ``v0`` [2, H, W] = (u, v) initial velocity."""

    def __init__(self, v0, *, mu=0.3, mask=None, dt=1.0, iterations_per_step: Optional[int] = 20, tol=None,
                 max_iterations=200, guard=True, device="cpu", optimizer=None, weights=None,
                 accelerate: int = DEFAULT_MEMORY, threads: Optional[int] = None, step_solver=None):
        a = check_arguments("BurgersSim", {**ARGUMENTS, "v0": BURGERS_V0}, locals())  # as passed: no coercion
        refuse_solver_settings("BurgersSim", BurgersSim.__init__, locals())
        v = np.asarray(a["v0"], dtype=np.float64)
        if v.ndim == 3:
            v = v[None]
        if v.ndim != 4 or v.shape[1] != 2:
            raise argument_error("BurgersSim", "v0", f"expected {BURGERS_V0.describe()}, got shape "
                                                     f"{list(np.shape(a['v0']))}")
        n, _, h, w = v.shape
        _check_grid("BurgersSim", "v0", h, w)
        problem = BurgersProblem(_mask("BurgersSim", a["mask"], n, h, w, device), 0.0,
                                 v_old=torch.as_tensor(v, dtype=F64, device=device), mu=_per_sample("BurgersSim", "mu", a["mu"], n),
                                 dt=_per_sample("BurgersSim", "dt", a["dt"], n))
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate),
                         weights=weights, threads=threads, step_solver=step_solver)

    def _state_tensor(self):
        return self.problem.fields["v_old"]

    @property
    def field(self):
        return self._np(self.problem.fields["v_old"])


def solve_poisson(f, *, mask=None, bc=0.0, iterations: Optional[int] = None, tol: Optional[float] = 1e-20,
                  max_iterations: int = 500, optimizer=None, device="cpu", weights=None,
                  accelerate: int = DEFAULT_MEMORY, threads: Optional[int] = None):
    """Solve -Laplace(u) = f with Dirichlet cells (default: a 2-cell zero frame): ``iterations``
    Metamizer steps, or until the mean squared residual is below ``tol``. Returns (u [H, W] numpy,
    SolveResult)."""
    a = check_arguments("solve_poisson", ARGUMENTS, locals())  # the arguments as passed: no coercion
    if iterations is None and tol is None:
        raise argument_error("solve_poisson", "tol", "expected a tolerance > 0 when iterations is None, got None")
    f_np = np.asarray(a["f"], dtype=np.float64)
    if f_np.ndim not in (2, 3):
        raise argument_error("solve_poisson", "f", f"expected {_SCALAR}, got shape {list(f_np.shape)}")
    n, (h, w) = (1 if f_np.ndim == 2 else f_np.shape[0]), f_np.shape[-2:]
    _check_grid("solve_poisson", "f", h, w)
    problem = LaplaceProblem(_mask("solve_poisson", a["mask"], n, h, w, device),
                             _grid_tensor("solve_poisson", "bc", a["bc"], n, 1, h, w, device),
                             _grid_tensor("solve_poisson", "f", f_np, n, 1, h, w, device))
    opt = optimizer_for(optimizer, weights, problem.device)
    with torch_threads(check_threads(threads, h, w)):
        res = solve(problem, opt, iterations=iterations, tol=None if iterations is not None else tol,
                    max_iterations=max_iterations, accelerate=accelerate)
    u = res.u[:, 0].cpu().numpy()
    return (u[0] if n == 1 else u), res
