"""Flexible GMRES for linear problems, with optional preconditioners (none, Jacobi, the Metamizer).

Any ``Problem`` whose residual is affine in the unknown and that exposes
``residual_field(u) -> r(u) [N,C,H,W]`` (0 on Dirichlet cells) is a linear system
``A x = -r(u0)`` for the correction ``x = u - u0``: matrix-vector products are ``r(v) - r(0)``,
one residual evaluation each. Dirichlet cells never move (every Krylov vector is 0 there).

``fgmres`` is restarted flexible GMRES (Saad 1993), batched: each of the N samples has its own
Krylov basis coefficients, Hessenberg matrix and Givens rotations, and stops on its own
tolerance (a converged sample's further directions are zeroed). "Flexible" means the
preconditioner may change from one application to the next, which is what a learned optimizer
is: ``metamizer_preconditioner`` runs a few network steps on the correction problem
``A z = v`` (``problem.with_rhs(v)``) from z = 0.

Stopping, per sample: ``||r(u)||_2 <= max(rtol * ||r(u0)||_2, atol)`` (atol may be a tensor [N]).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Union

import torch

Preconditioner = Callable[[torch.Tensor], torch.Tensor]
TINY = 1e-300
BREAKDOWN = 1e-12   # relative size of the new direction below which the basis stops growing


@dataclass
class KrylovResult:
    u: torch.Tensor
    residual_norms: List[torch.Tensor] = field(default_factory=list)  # ||r||_2 per iteration, [N]
    iterations: int = 0            # Krylov iterations (matrix-vector products after the first residual)
    cycles: int = 0                # restart cycles run
    converged: Optional[torch.Tensor] = None   # [N] bool
    hit_cap: bool = False

    @property
    def residual_norm(self) -> torch.Tensor:
        return self.residual_norms[-1]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _norm(a: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a.flatten(1), 2.0, dim=1)


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.view((-1,) + (1,) * (like.dim() - 1))


def _check_linear_problem(problem) -> None:
    if not callable(getattr(problem, "residual_field", None)):
        raise TypeError(f"{type(problem).__name__} has no residual_field(u); the Krylov solvers need a "
                        "linear problem that returns its residual field")


class ResidualOperator:
    """A x = r(x) - r(0) for a linear problem (one residual evaluation per product)."""

    def __init__(self, problem):
        _check_linear_problem(problem)
        self.problem = problem
        self.offset = problem.residual_field(torch.zeros(problem.shape, dtype=torch.float64,
                                                         device=problem.device))

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.problem.residual_field(v) - self.offset


def jacobi_preconditioner(problem, radius: int = 1) -> Preconditioner:
    """z = v / diag(A), the diagonal probed with (2*radius+1)^2 coloured unit vectors (exact for
    operators whose stencil reaches at most ``radius`` cells; 9 products for radius 1)."""
    op = ResidualOperator(problem)
    n, c, h, w = problem.shape
    period = 2 * radius + 1
    ii = torch.arange(h, device=problem.device).view(-1, 1) % period
    jj = torch.arange(w, device=problem.device).view(1, -1) % period
    diag = torch.zeros(problem.shape, dtype=torch.float64, device=problem.device)
    for a in range(period):
        for b in range(period):
            colour = ((ii == a) & (jj == b)).to(torch.float64).expand(n, c, h, w)
            diag += colour * op(colour)
    # Dirichlet cells (diag 0): leave the vector there alone (it is 0 anyway)
    inv = torch.where(diag.abs() > TINY, 1.0 / torch.where(diag == 0, 1.0, diag), torch.ones_like(diag))
    return lambda v: v * inv


def metamizer_preconditioner(problem, optimizer, steps: int = 2, guard: bool = True) -> Preconditioner:
    """z ~ A^{-1} v from ``steps`` Metamizer iterations on ``problem.with_rhs(v)`` starting at z = 0.

    v is normalized to unit RMS first (FGMRES only needs the direction of z). Each application
    starts from a fresh optimizer state whose scale is ||v|| / ||A v|| (in units of z for a
    unit-RMS right-hand side), estimated once: carrying the scale over from one application to
    the next does not work, as the network grows it by ~e on every fresh start."""
    if not callable(getattr(problem, "with_rhs", None)):
        raise TypeError(f"{type(problem).__name__} has no with_rhs(rhs); the Metamizer preconditioner needs it")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    from metaphys.optim.solve import iterate
    op = ResidualOperator(problem)
    fixed = {}

    def apply(v: torch.Tensor) -> torch.Tensor:
        rms = _norm(v) / float(v[0].numel()) ** 0.5
        vn = v / _bcast(rms.clamp_min(TINY), v)
        if "scale" not in fixed:
            fixed["scale"] = (_norm(vn) / _norm(op(vn)).clamp_min(TINY)).repeat_interleave(v.shape[1])
        state = optimizer.init_state(tuple(v.shape), device=v.device)
        state.scale.copy_(fixed["scale"])
        res = iterate(problem.with_rhs(vn), optimizer, torch.zeros_like(v), state, iterations=steps, guard=guard)
        return res.u * _bcast((rms > 0).to(v.dtype), v)

    return apply


def fgmres(problem, u0: Optional[torch.Tensor] = None, *, rtol: float = 1e-10,
           atol: Union[float, torch.Tensor] = 0.0, restart: int = 40, max_iterations: int = 400,
           preconditioner: Optional[Preconditioner] = None,
           callback: Optional[Callable[[int, torch.Tensor], None]] = None) -> KrylovResult:
    """Solve r(u) = 0 on the free cells of a linear ``problem`` from ``u0`` (default
    ``problem.initial_guess()``) by restarted flexible GMRES; see the module doc."""
    _check_linear_problem(problem)
    if not rtol >= 0 or (isinstance(atol, (int, float)) and not atol >= 0):
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol!r}, atol={atol!r}")
    if not isinstance(restart, int) or restart < 1:
        raise ValueError(f"restart must be a positive int, got {restart!r}")
    if not isinstance(max_iterations, int) or max_iterations < 0:
        raise ValueError(f"max_iterations must be a non-negative int, got {max_iterations!r}")
    u = problem.initial_guess() if u0 is None else problem.impose(problem.check_unknown(u0))
    op = ResidualOperator(problem)
    precond = preconditioner if preconditioner is not None else (lambda v: v)
    r = -problem.residual_field(u)
    beta = _norm(r)
    target = torch.maximum(rtol * beta, torch.as_tensor(atol, dtype=beta.dtype, device=beta.device))
    result = KrylovResult(u=u, residual_norms=[beta])
    n = u.shape[0]
    m = restart
    stalled = torch.zeros_like(beta, dtype=torch.bool)
    while True:
        active = (beta > target) & ~stalled
        if not bool(active.any()) or result.iterations >= max_iterations:
            break
        V = [r / _bcast(beta.clamp_min(TINY), r)]
        Z: List[torch.Tensor] = []
        H = torch.zeros(n, m + 1, m, dtype=torch.float64, device=u.device)
        cs = torch.ones(n, m, dtype=torch.float64, device=u.device)
        sn = torch.zeros(n, m, dtype=torch.float64, device=u.device)
        g = torch.zeros(n, m + 1, dtype=torch.float64, device=u.device)
        g[:, 0] = beta
        k = 0
        for j in range(m):
            z = precond(V[j]) * _bcast(active.to(torch.float64), r)
            Z.append(z)
            w = op(z)
            w_norm = _norm(w)
            for i in range(j + 1):            # modified Gram-Schmidt, once re-orthogonalized
                hij = _dot(w, V[i])
                w = w - _bcast(hij, w) * V[i]
                H[:, i, j] = hij
            for i in range(j + 1):
                hij = _dot(w, V[i])
                w = w - _bcast(hij, w) * V[i]
                H[:, i, j] += hij
            hnext = _norm(w)
            # breakdown: A z (nearly) in the span of the basis -> no new direction, not amplified noise
            fresh = hnext > BREAKDOWN * w_norm
            hnext = torch.where(fresh, hnext, torch.zeros_like(hnext))
            H[:, j + 1, j] = hnext
            V.append(w / _bcast(hnext.clamp_min(TINY), w) * _bcast(fresh.to(w.dtype), w))
            for i in range(j):                 # previous rotations on the new column
                a, b = H[:, i, j].clone(), H[:, i + 1, j].clone()
                H[:, i, j] = cs[:, i] * a + sn[:, i] * b
                H[:, i + 1, j] = -sn[:, i] * a + cs[:, i] * b
            a, b = H[:, j, j], H[:, j + 1, j]
            rho = torch.sqrt(a * a + b * b)
            safe = rho > TINY
            cs[:, j] = torch.where(safe, a / rho.clamp_min(TINY), torch.ones_like(a))
            sn[:, j] = torch.where(safe, b / rho.clamp_min(TINY), torch.zeros_like(b))
            H[:, j, j] = torch.where(safe, rho, a)
            H[:, j + 1, j] = 0.0
            g[:, j + 1] = -sn[:, j] * g[:, j]
            g[:, j] = cs[:, j] * g[:, j]
            k = j + 1
            result.iterations += 1
            estimate = g[:, j + 1].abs()
            active = active & (estimate > target)
            if callback is not None:
                callback(result.iterations, estimate)
            if not bool(active.any()) or result.iterations >= max_iterations:
                break
        R = H[:, :k, :k]
        diag = torch.diagonal(R, dim1=1, dim2=2)
        R = R + torch.diag_embed(torch.where(diag.abs() > TINY, torch.zeros_like(diag), torch.ones_like(diag)))
        y = torch.linalg.solve_triangular(R, g[:, :k, None], upper=True)[..., 0]
        # a (numerically) singular least-squares system: no update for that sample this cycle, and
        # it stops (reported as not converged) rather than carrying NaN/Inf into the solution
        broken = ~torch.isfinite(y).all(1)
        if bool(broken.any()):
            y = torch.where(broken.view(-1, 1), torch.zeros_like(y), y)
            stalled = stalled | broken
        dx = sum(_bcast(y[:, i].contiguous(), Z[i]) * Z[i] for i in range(k))
        u = problem.impose(u + dx)
        r = -problem.residual_field(u)          # the true residual, not the recursive estimate
        beta = _norm(r)
        result.residual_norms.append(beta)
        result.cycles += 1
    result.u = u
    result.converged = beta <= target
    result.hit_cap = not bool(result.converged.all())
    return result
