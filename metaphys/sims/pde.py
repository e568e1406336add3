"""The paper's other systems through the same API: DiffusionSim, WaveSim, BurgersSim, solve_poisson.

Each wraps a batched Problem and a TimeStepper and follows the sim protocol (sims/base.py):
``step()`` advances one time step, ``run(n)`` returns ``field`` after every step, ``records`` holds
iterations and residual per step, ``state_dict()`` / ``load_state_dict()`` continue bit for bit.
Fields are numpy arrays [H, W] (batch 1) or [N, H, W]; row 0 is the top of the grid.
``weights=`` (a path to TorchScript weights) or ``optimizer=`` choose the optimizer (default: the
shipped Metamizer, self-tested at load). A step whose residual or field blows up ends the sim with a
``SimulationDiverged`` error naming the step and the residual, never a silently huge number.
"""
from __future__ import annotations

import math
import operator
from typing import List, Optional

import numpy as np
import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.solve import DivergenceError, TimeStepper, solve
from metaphys.physics import BurgersProblem, DiffusionProblem, LaplaceProblem, WaveProblem, frame_mask
from metaphys.sims.base import Sim, optimizer_state, restore_optimizer_state
from metaphys.sims.common import SolverSettings, StepRecord, optimizer_for

F64 = torch.float64


class SimulationDiverged(DivergenceError):
    """A time step blew up (non-finite values or a residual past the problem's divergence threshold);
    the message names the sim, the step and the residual."""


def _shape(shape):
    """(rows, cols) of integers >= 16 (numpy integers too): the optimizer's smallest grid."""
    try:
        h, w = (int(operator.index(v)) for v in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be (rows, cols) of integers, got {shape!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"shape must be (rows, cols) with both >= 16 (the optimizer's smallest grid), got {(h, w)}")
    return h, w


def _mask(mask, n, h, w, device):
    if mask is None:
        return frame_mask(n, h, w, device=device)
    m = torch.as_tensor(np.asarray(mask), dtype=F64, device=device)
    if m.dim() == 2:
        m = m.expand(n, 1, h, w)
    return m.contiguous()


def _field(value, n, c, h, w, device):
    if value is None or isinstance(value, (int, float)):
        return value
    if np.ndim(value) == 0:  # numpy scalars (np.float32, np.int64) act like Python numbers
        return float(value)
    t = torch.as_tensor(np.asarray(value), dtype=F64, device=device)
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


class _PDESim(Sim):
    problem = None

    def __init__(self, problem, optimizer, settings: SolverSettings, rescale_on_step=None, weights=None):
        self.problem = problem
        self.settings = settings
        opt = optimizer_for(optimizer, weights, problem.device)
        self.stepper = TimeStepper(problem, opt, iterations_per_step=settings.iterations_per_step,
                                   tol=settings.tol, max_iterations=settings.max_iterations, guard=settings.guard,
                                   rescale_on_step=rescale_on_step, accelerate=settings.accelerate)
        self.records: List[StepRecord] = []

    def step(self) -> StepRecord:
        number = len(self.records) + 1
        name = type(self).__name__
        scale = float(self._unknown_scale())
        try:
            rep = self.stepper.step()
        except DivergenceError as exc:
            raise SimulationDiverged(f"{name} diverged at step {number}: {exc}") from None
        rec = StepRecord(number, rep.iterations, float(rep.residual_end.max()),
                         float(rep.residual_start.max()), rep.guard_rejections, rep.hit_cap)
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
        """Everything needed to continue bit for bit: the problem's fields, the stepper's unknown and
        optimizer state, the records."""
        st = self.stepper
        return {"fields": {k: v.clone() for k, v in self.problem.fields.items()}, "u": st.u.clone(),
                "state": optimizer_state(st.optimizer, st.state), "records": [r.as_dict() for r in self.records]}

    def load_state_dict(self, sd: dict) -> None:
        st, device = self.stepper, self.problem.device
        self.problem.fields = {k: v.to(device) for k, v in sd["fields"].items()}
        st.u = sd["u"].to(device)
        st.state = restore_optimizer_state(st.optimizer, sd["state"], st.u.shape, device)
        self.records = [StepRecord(**r) for r in sd["records"]]

    @staticmethod
    def _np(t):
        a = t.detach().cpu().numpy()
        return a[0] if a.shape[0] == 1 else a


class DiffusionSim(_PDESim):
    """Advection-diffusion of a scalar (velocity channels: (v_y, v_x) in cells/step)."""

    def __init__(self, shape=(64, 64), *, D=0.1, velocity=None, source=None, mask=None, bc=0.0, c0=None,
                 dt=1.0, batch=1, iterations_per_step: Optional[int] = 20, tol=None, max_iterations=200,
                 guard=True, device="cpu", optimizer=None, weights=None, accelerate: int = DEFAULT_MEMORY):
        h, w = _shape(shape)
        m = _mask(mask, batch, h, w, device)
        problem = DiffusionProblem(m, _field(bc, batch, 1, h, w, device), c_old=_field(c0, batch, 1, h, w, device),
                                   velocity=_field(velocity, batch, 2, h, w, device),
                                   source=_field(source, batch, 1, h, w, device), D=D, dt=dt)
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate),
                         weights=weights)

    def _state_tensor(self):
        return self.problem.fields["c_old"]

    @property
    def field(self):
        return self._np(self.problem.fields["c_old"][:, 0])


class WaveSim(_PDESim):
    """Wave equation for a height field from the initial state ``x0`` (heights, [H, W] or [N, H, W];
    default 0) and ``v0`` (vertical velocities; default 0); ``boundary(t)`` may return new Dirichlet
    heights per step."""

    def __init__(self, shape=(64, 64), *, x0=None, v0=None, c=1.0, mask=None, bc=0.0, boundary=None, dt=1.0,
                 batch=1, iterations_per_step: Optional[int] = 20, tol=None, max_iterations=200, guard=True,
                 device="cpu", optimizer=None, weights=None, accelerate: int = DEFAULT_MEMORY):
        h, w = _shape(shape)
        m = _mask(mask, batch, h, w, device)
        problem = WaveProblem(m, _field(bc, batch, 1, h, w, device), x_old=_field(x0, batch, 1, h, w, device),
                              v_old=_field(v0, batch, 1, h, w, device), c=c, dt=dt)
        self.boundary = boundary
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate),
                         weights=weights)

    def _state_tensor(self):
        return self.problem.fields["x_old"]

    def step(self):
        if self.boundary is not None:
            self.problem.set_boundary_values(_field(self.boundary(len(self.records) + 1), 1, 1, *self.problem.shape[-2:],
                                                    self.problem.device))
        return super().step()

    @property
    def field(self):
        return self._np(self.problem.fields["x_old"][:, 0])


class BurgersSim(_PDESim):
    """2D coupled Burgers (periodic stencils); ``v0`` [2, H, W] = (u, v) initial velocity."""

    def __init__(self, v0, *, mu=0.3, mask=None, dt=1.0, iterations_per_step: Optional[int] = 20, tol=None,
                 max_iterations=200, guard=True, device="cpu", optimizer=None, weights=None,
                 accelerate: int = DEFAULT_MEMORY):
        v = _field(v0, 1, 2, 0, 0, device)
        if not isinstance(v, torch.Tensor) or v.dim() != 4 or v.shape[1] != 2:
            raise ValueError(f"v0 must be an array [2, H, W] (or [N, 2, H, W]) of (u, v) velocities, got "
                             f"{tuple(v.shape) if isinstance(v, torch.Tensor) else v!r}")
        n, _, h, w = v.shape
        _shape((h, w))
        if not bool(torch.isfinite(v).all()):
            raise ValueError("v0 must be finite (it holds NaN or inf)")
        m = _mask(mask, n, h, w, device)
        problem = BurgersProblem(m, 0.0, v_old=v, mu=mu, dt=dt)
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate),
                         weights=weights)

    def _state_tensor(self):
        return self.problem.fields["v_old"]

    @property
    def field(self):
        return self._np(self.problem.fields["v_old"])


def solve_poisson(f, *, mask=None, bc=0.0, iterations: Optional[int] = None, tol: Optional[float] = 1e-20,
                  max_iterations: int = 500, optimizer=None, device="cpu", weights=None,
                  accelerate: int = DEFAULT_MEMORY):
    """Solve -Laplace(u) = f with Dirichlet cells (default: a 2-cell zero frame).
    Returns (u [H, W] numpy, SolveResult)."""
    f_t = _field(f, 1, 1, 0, 0, device)
    if not isinstance(f_t, torch.Tensor) or f_t.dim() != 4:
        raise ValueError(f"f must be an array [H, W] (or [N, H, W]), got {f!r}")
    n, _, h, w = f_t.shape
    _shape((h, w))
    problem = LaplaceProblem(_mask(mask, n, h, w, device), _field(bc, n, 1, h, w, device), f_t)
    opt = optimizer_for(optimizer, weights, problem.device)
    res = solve(problem, opt, iterations=iterations, tol=None if iterations is not None else tol,
                max_iterations=max_iterations, accelerate=accelerate)
    u = res.u[:, 0].cpu().numpy()
    return (u[0] if n == 1 else u), res
