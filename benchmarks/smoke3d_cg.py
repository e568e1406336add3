"""The 3-D smoke's fluid step without the network: Newton's method with plain conjugate gradients on the
same loss (benchmarks/smoke3d.py's baseline and its converged reference).

The step of ``physics.fluid3d`` minimises the loss L(u) = mean squared momentum residual + weighted
boundary and gauge terms of the unknown u = (vector potential a, pressure p); L is a sum of squares, zero
at the answer. Each Newton iteration solves H d = -g (g = the compiled kernel's gradient, H its Hessian)
by plain, unpreconditioned CG from d = 0, with H v by forward differences of the same kernel's gradient
(one ``fluid3d_loss_grad`` call per CG iteration, the cost of one iteration of the Metamizer's loop
without the network). CG minimises the quadratic model m(d) = L + g.d + d.H.d/2 over its Krylov space,
and its iterates satisfy d.H.d = -g.d, so m is known at every iteration without another evaluation:
CG stops once m <= ``margin`` * tol (or at ``max_cg``), then the step is taken (halved while it raises
the loss) and the true loss decides whether another Newton iteration runs. H is singular (the gauge
a + grad phi leaves the velocity alone; the loss does not fix it) but g lies in its range, which CG
needs. The stopping rule is the Metamizer's: the loss (the sims' MSR ``tol``) <= tol.
"""
from __future__ import annotations

import math
import time

import torch

from metaphys.optim.step_solvers import StepResult, StepSolverBase


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


class NewtonCGStep(StepSolverBase):
    """A step solver (``optim.step_solvers`` protocol) for one sample: Newton-CG to ``loss <= tol``.
    ``iterations`` of the result = CG iterations (kernel calls); ``newton_iterations`` = outer ones."""

    name = "newton-cg"

    def __init__(self, tol: float = 1e-10, *, max_cg: int = 20000, max_newton: int = 30, margin: float = 0.5):
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self.tol, self.max_cg, self.max_newton, self.margin = float(tol), int(max_cg), int(max_newton), float(margin)
        self.last_times: list = []   # (seconds since the start, loss) after each Newton iteration of the last solve

    def solve(self, problem, start: torch.Tensor, state=None, **options) -> StepResult:
        if start.shape[0] != 1:
            raise ValueError(f"NewtonCGStep solves one sample at a time, got a batch of {start.shape[0]}")
        t0 = time.perf_counter()
        u = start.detach().clone().contiguous()
        loss, g = problem.loss_and_grad(u)
        r0 = loss.detach().clone()
        value = float(loss[0])
        self.last_times = [(0.0, value)]
        cg_total = outer = 0
        hit_cap = False
        while value > self.tol:
            if outer >= self.max_newton or cg_total >= self.max_cg:
                hit_cap = True
                break
            d, k = self._cg(problem, u, g, value)
            cg_total += k
            outer += 1
            u, value, g, loss, moved = self._line_search(problem, u, d, value, g, loss)
            self.last_times.append((time.perf_counter() - t0, value))
            if not moved:   # no downhill step along Newton's direction: round-off decides from here
                hit_cap = value > self.tol
                break
            if not math.isfinite(value):
                raise FloatingPointError(f"Newton-CG produced a non-finite loss at Newton iteration {outer}")
        r1 = loss.detach().clone()
        return StepResult(u=u, state=state, finished_by=self.name, iterations=cg_total, residuals=[r0, r1],
                          residual_start=r0, residual_end=r1, converged=value <= self.tol, hit_cap=hit_cap,
                          newton_iterations=outer, krylov_iterations=cg_total)

    def _cg(self, problem, u, g, value):
        """(d, iterations): CG on H d = -g until the quadratic model is <= margin * tol."""
        umax = max(1.0, float(u.abs().max()))

        def hv(v):
            eps = 1e-7 * umax / max(float(v.abs().max()), 1e-300)
            return (problem.loss_and_grad((u + eps * v).contiguous())[1] - g) / eps

        d = torch.zeros_like(u)
        r = -g
        p = r.clone()
        rr = _dot(r, r)
        gd = 0.0
        target = self.margin * self.tol
        budget = self.max_cg
        k = 0
        while k < budget:
            hp = hv(p)
            k += 1
            php = _dot(p, hp)
            if not php > 0:   # no curvature left along p (round-off, or the gauge's null space)
                break
            alpha = rr / php
            d = d + alpha * p
            r = r - alpha * hp
            gd += alpha * _dot(g, p)
            if value + 0.5 * gd <= target:
                break
            rr_new = _dot(r, r)
            if rr_new == 0.0:
                break
            p = r + (rr_new / rr) * p
            rr = rr_new
        return d, k

    @staticmethod
    def _line_search(problem, u, d, value, g, loss, halvings: int = 30):
        alpha = 1.0
        for _ in range(halvings + 1):
            cand = (u + alpha * d).contiguous()
            new_loss, new_g = problem.loss_and_grad(cand)
            if float(new_loss[0]) <= value:
                return cand, float(new_loss[0]), new_g, new_loss, True
            alpha *= 0.5
        return u, value, g, loss, False
