"""The paper's other systems through the same API: DiffusionSim, WaveSim, BurgersSim, solve_poisson.

Each wraps a batched Problem and a TimeStepper; ``step()`` advances one time step, ``run(n)``
returns the field after every step, ``records`` holds iterations and residual per step.
Fields are numpy arrays [H, W] (batch 1) or [N, H, W]; row 0 is the top of the grid.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from metaphys.optim.solve import TimeStepper, solve
from metaphys.physics import BurgersProblem, DiffusionProblem, LaplaceProblem, WaveProblem, frame_mask
from metaphys.sims.common import SolverSettings, StepRecord, default_optimizer

F64 = torch.float64


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
    t = torch.as_tensor(np.asarray(value), dtype=F64, device=device)
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


class _PDESim:
    problem = None

    def __init__(self, problem, optimizer, settings: SolverSettings, rescale_on_step=None):
        self.problem = problem
        self.settings = settings
        opt = optimizer if optimizer is not None else default_optimizer(problem.device)
        self.stepper = TimeStepper(problem, opt, iterations_per_step=settings.iterations_per_step,
                                   tol=settings.tol, max_iterations=settings.max_iterations, guard=settings.guard,
                                   rescale_on_step=rescale_on_step)
        self.records: List[StepRecord] = []

    def step(self) -> StepRecord:
        rep = self.stepper.step()
        rec = StepRecord(len(self.records) + 1, rep.iterations, float(rep.residual_end.max()),
                         float(rep.residual_start.max()), rep.guard_rejections, rep.hit_cap)
        self.records.append(rec)
        return rec

    def run(self, steps: int) -> np.ndarray:
        out = []
        for _ in range(int(steps)):
            self.step()
            out.append(self.field.copy())
        return np.stack(out)

    @staticmethod
    def _np(t):
        a = t.detach().cpu().numpy()
        return a[0] if a.shape[0] == 1 else a


class DiffusionSim(_PDESim):
    """Advection-diffusion of a scalar (velocity channels: (v_y, v_x) in cells/step)."""

    def __init__(self, shape=(64, 64), *, D=0.1, velocity=None, source=None, mask=None, bc=0.0, c0=None,
                 dt=1.0, batch=1, iterations_per_step: Optional[int] = 20, tol=None, max_iterations=200,
                 guard=True, device="cpu", optimizer=None):
        h, w = shape
        m = _mask(mask, batch, h, w, device)
        problem = DiffusionProblem(m, _field(bc, batch, 1, h, w, device), c_old=_field(c0, batch, 1, h, w, device),
                                   velocity=_field(velocity, batch, 2, h, w, device),
                                   source=_field(source, batch, 1, h, w, device), D=D, dt=dt)
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard))

    @property
    def field(self):
        return self._np(self.problem.fields["c_old"][:, 0])


class WaveSim(_PDESim):
    """Wave equation for a height field; ``boundary(t)`` may return new Dirichlet heights per step."""

    def __init__(self, shape=(64, 64), *, c=1.0, mask=None, bc=0.0, boundary=None, dt=1.0, batch=1,
                 iterations_per_step: Optional[int] = 20, tol=None, max_iterations=200, guard=True,
                 device="cpu", optimizer=None):
        h, w = shape
        m = _mask(mask, batch, h, w, device)
        problem = WaveProblem(m, _field(bc, batch, 1, h, w, device), c=c, dt=dt)
        self.boundary = boundary
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard))

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
                 max_iterations=200, guard=True, device="cpu", optimizer=None):
        v = _field(v0, 1, 2, 0, 0, device)
        n, _, h, w = v.shape
        m = _mask(mask, n, h, w, device)
        problem = BurgersProblem(m, 0.0, v_old=v, mu=mu, dt=dt)
        super().__init__(problem, optimizer, SolverSettings(iterations_per_step, tol, max_iterations, guard))

    @property
    def field(self):
        return self._np(self.problem.fields["v_old"])


def solve_poisson(f, *, mask=None, bc=0.0, iterations: Optional[int] = None, tol: Optional[float] = 1e-20,
                  max_iterations: int = 500, optimizer=None, device="cpu"):
    """Solve -Laplace(u) = f with Dirichlet cells (default: a 2-cell zero frame).
    Returns (u [H, W] numpy, SolveResult)."""
    f_t = _field(f, 1, 1, 0, 0, device)
    n, _, h, w = f_t.shape
    problem = LaplaceProblem(_mask(mask, n, h, w, device), _field(bc, n, 1, h, w, device), f_t)
    opt = optimizer if optimizer is not None else default_optimizer(problem.device)
    res = solve(problem, opt, iterations=iterations, tol=None if iterations is not None else tol,
                max_iterations=max_iterations)
    u = res.u[:, 0].cpu().numpy()
    return (u[0] if n == 1 else u), res
