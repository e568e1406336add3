"""Newton's method on a grid PDE's residual equations r(u) = 0: the converged reference for
time steps whose loss is a mean squared residual (today Burgers, the one problem that declares
``residual_field`` and ``jacobian_offsets``; any grid PDE can by adding both).

The Jacobian is assembled exactly and sparsely from Jacobian-vector products of the problem's
``residual_field`` (its PyTorch twin without stop-gradients) with the same linear graph coloring
as the cloth's Hessian (``newton.linear_coloring``): a residual at a cell depends on the unknowns
at ``problem.jacobian_offsets`` only, so one probe per color and channel recovers every column.
Each iteration solves J d = -r on the free cells with a sparse LU and backtracks on the MSR.

Why not Newton on the MSR itself (``NewtonSolver`` with the Hessian of |r|^2)? Measured on the
Burgers eval case (64^2, mu = 0.3): it stops at stationary points of |r|^2 with MSR 8e-4 already at
the first step, where Newton on r = 0 reaches 1.5e-32 in 5 iterations.

When r = 0 has no solution near the start (Burgers with dt = 1 develops folds: the implicit step's
Jacobian becomes singular), the iteration stalls at a positive MSR; ``ResidualNewtonResult``
says so (``converged`` False, the MSR reached and the ``reason`` it stopped), so a benchmark
can tell a solver's failure from equations that have no root.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch

from metaphys.optim.newton import NewtonError, assemble_from_probes, color_probes


def sparse_jacobian(problem, u: torch.Tensor, *, probes_per_batch: int = 18):
    """Exact Jacobian of sample 0's residual field at ``u`` [1, C, H, W] as a scipy CSR matrix
    [n, n], n = C*H*W, in u's flattened (c, i, j) order (rows: residuals, columns: unknowns)."""
    if u.shape[0] != 1:
        raise NewtonError(f"sparse_jacobian works on one sample at a time, got a batch of {u.shape[0]}")
    _, C, H, W = u.shape
    offsets = list(problem.jacobian_offsets)
    color, V = color_probes(offsets, C, H, W, device=u.device)
    jv = torch.empty_like(V)
    for start in range(0, V.shape[0], probes_per_batch):
        chunk = V[start:start + probes_per_batch]
        P = chunk.shape[0]
        sub = problem.select(torch.zeros(P, dtype=torch.long, device=u.device))
        _, out = torch.func.jvp(sub.residual_field, (u.expand(P, C, H, W).contiguous(),), (chunk,))
        jv[start:start + P] = out.detach()
    return assemble_from_probes(jv, color, offsets, C, H, W)


@dataclass
class ResidualNewtonResult:
    u: torch.Tensor
    msr: List[float] = field(default_factory=list)     # MSR of sample 0 per iteration (row 0: start)
    iterations: int = 0
    converged: bool = False
    halvings: int = 0
    reason: str = ""

    @property
    def residual(self) -> float:
        return self.msr[-1]


class ResidualNewtonSolver:
    """Damped Newton on r(u) = 0 for problems with ``residual_field`` and ``jacobian_offsets``.

    Stops when the MSR (mean of r^2 over the free cells and channels, the problems' loss) is
    <= ``tol``, when a full line search cannot lower it (round-off, or no root nearby), or after
    ``max_iterations``."""

    def __init__(self, tol: float = 1e-28, max_iterations: int = 30, armijo: float = 1e-4,
                 max_halvings: int = 20):
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        if int(max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations!r}")
        self.tol, self.max_iterations = float(tol), int(max_iterations)
        self.armijo, self.max_halvings = float(armijo), int(max_halvings)

    @staticmethod
    def _check(problem):
        for attr in ("residual_field", "jacobian_offsets"):
            if not hasattr(problem, attr):
                raise NewtonError(f"{type(problem).__name__} has no {attr}: the residual Newton needs the "
                                  "residual field r(u) and its stencil (BurgersProblem has both)")
        why = problem.jacobian_stencil_problem() if hasattr(problem, "jacobian_stencil_problem") else None
        if why:
            raise NewtonError(why)

    @staticmethod
    def _msr(r: np.ndarray) -> float:
        return float(r @ r) / max(r.size, 1)

    def solve(self, problem, u: torch.Tensor) -> ResidualNewtonResult:
        """Solve sample 0 of ``problem`` from ``u`` [1, C, H, W] (float64)."""
        import scipy.sparse.linalg as spla

        self._check(problem)
        if u.shape[0] != 1:
            raise NewtonError(f"ResidualNewtonSolver.solve takes one sample, got a batch of {u.shape[0]}")
        # the unknowns the problem does not impose (Dirichlet cells keep their values)
        free = (problem.impose(torch.ones_like(u)) - problem.impose(torch.zeros_like(u))).flatten() != 0
        idx = free.nonzero().view(-1)
        idx_np = idx.cpu().numpy()
        u = problem.impose(u.detach().clone())

        def residual(x):
            return problem.residual_field(x).detach().flatten()[idx].cpu().numpy()

        r = residual(u)
        out = ResidualNewtonResult(u=u, msr=[self._msr(r)])
        for it in range(self.max_iterations):
            if out.msr[-1] <= self.tol:
                out.converged = True
                break
            J = sparse_jacobian(problem, u).tocsr()[idx_np][:, idx_np].tocsc()
            try:
                d = spla.splu(J).solve(-r)
            except RuntimeError:
                out.reason = "singular Jacobian"
                break
            if not np.all(np.isfinite(d)):
                out.reason = "singular Jacobian"
                break
            step = torch.zeros(u.numel(), dtype=torch.float64)
            step[idx.cpu()] = torch.as_tensor(d)
            step = step.view_as(u).to(u.device)
            alpha, accepted = 1.0, False
            for h in range(self.max_halvings + 1):
                u_new = problem.apply(u, alpha * step)
                r_new = residual(u_new)
                msr_new = self._msr(r_new)
                # Newton's direction is downhill for |r|^2 with slope -2|r|^2
                if np.isfinite(msr_new) and msr_new <= (1 - 2 * self.armijo * alpha) * out.msr[-1]:
                    accepted = True
                    break
                alpha *= 0.5
                out.halvings += 1
            if not accepted:
                out.reason = "no decrease along Newton's direction (round-off, or no root near the start)"
                break
            u, r = u_new, r_new
            out.msr.append(msr_new)
            out.iterations = it + 1
        else:
            out.converged = out.msr[-1] <= self.tol
            if not out.converged:
                out.reason = f"not below {self.tol:.0e} after {self.max_iterations} iterations"
        out.u = u
        return out
