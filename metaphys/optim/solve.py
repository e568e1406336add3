"""solve / TimeStepper: drive any optimizer (Metamizer or baseline) on any Problem.

Stopping: a fixed number of ``iterations``, or a residual ``tol`` with an iteration cap
(``max_iterations``) -- per sample: a sample whose residual is <= tol stops moving while the
others continue. The residual of every iteration is recorded.

Step guard (production safety, beyond the paper; on by default in simulations, off in the
paper-faithful mode): a proposed step that makes the loss non-finite or grows it by more than
``guard_growth * |loss|`` is rejected for that sample and retried with the step and the scale
shrunk by ``guard_shrink`` (up to ``guard_retries`` times, then the sample stays put for this
iteration). Rejections are counted and reported. Without the guard, divergence (non-finite loss,
or loss > 1e10 x the starting loss) raises ``DivergenceError``; NaN is never returned.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY, SubspaceAccelerator

DIVERGENCE_FACTOR = 1e10


class DivergenceError(RuntimeError):
    """The optimizer diverged; the message names the iteration and the residual."""


@dataclass
class SolveResult:
    u: torch.Tensor
    residuals: List[torch.Tensor] = field(default_factory=list)   # per iteration, [N]
    iterations: int = 0
    guard_rejections: int = 0
    hit_cap: bool = False
    state: object = None

    @property
    def residual(self) -> torch.Tensor:
        return self.residuals[-1]

    def history(self) -> torch.Tensor:
        """[iterations+1, N] residual history (row 0 = before the first step)."""
        return torch.stack(self.residuals)


def _check_stopping(iterations, tol, max_iterations):
    if iterations is None and tol is None:
        raise ValueError("give iterations=K or tol=... (with max_iterations)")
    if iterations is not None and (not isinstance(iterations, int) or iterations < 0):
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    if tol is not None and not (tol > 0):
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations!r}")


ALPHA_MIN, ALPHA_MAX = 1.0 / 16.0, 8.0
# measured on the eval cases (2026-11-29, previous weights): taking another length only when it
# halves the loss, and rescaling the optimizer state with it, gave advection-diffusion D=0.1 at
# 20 it/step 9.0 -> 8.8e-8 and Burgers mu=0.3 at 5 it/step 7.6e-3 -> 1.8e-4; the subspace
# acceleration (optim/accelerate.py) does better everywhere and is the default instead
LS_GAIN = 0.5


def _line_search(problem, optimizer, new_state, u, loss, step, u1, loss1, grad1, active, shape):
    """Per sample, the step length alpha along the optimizer's step that minimizes the loss.

    A parabola through L(0), L(1), L(2) gives alpha* (exact for the quadratic losses of linear
    PDEs: one extra evaluation, then one at alpha*); the best of alpha in {1, 2, alpha*} is
    taken, clamped to [1/16, 8]. The optimizer's state (scale, previous step) is rescaled by the
    same alpha, so the network sees the step that was actually taken (the paper's scale
    invariance makes this consistent)."""
    u2 = problem.apply(u, 2 * step)
    loss2, grad2 = problem.loss_and_grad(u2)
    c = 0.5 * (loss2 - 2 * loss1 + loss)
    b = loss1 - loss - c
    star = torch.where(c > 0, -b / (2 * c).clamp_min(1e-300), torch.full_like(c, ALPHA_MAX))
    star = torch.nan_to_num(star, nan=1.0).clamp(ALPHA_MIN, ALPHA_MAX)
    us = problem.apply(u, star.view(shape) * step)
    losss, grads = problem.loss_and_grad(us)
    cand_loss = torch.stack([torch.nan_to_num(x, nan=float("inf")) for x in (loss1, loss2, losss)])
    pick = cand_loss.argmin(0)                                          # [N]
    # keep the network's own step unless another length is clearly better: its step lengths carry
    # information (momentum-like scale dynamics) that a greedy line search would destroy
    pick = torch.where(cand_loss.gather(0, pick[None])[0] < LS_GAIN * cand_loss[0], pick, torch.zeros_like(pick))
    alpha = torch.stack([torch.ones_like(star), 2 * torch.ones_like(star), star]).gather(0, pick[None])[0]
    alpha = torch.where(active, alpha, torch.ones_like(alpha))
    sel = lambda a, b_, c_: torch.where((pick == 0).view(shape), a, torch.where((pick == 1).view(shape), b_, c_))
    u_new = torch.where(active.view(shape), sel(u1, u2, us), u1)
    grad_new = torch.where(active.view(shape), sel(grad1, grad2, grads), grad1)
    loss_new = torch.where(active, cand_loss.gather(0, pick[None])[0], loss1)
    optimizer.shrink(new_state, alpha.to(step.dtype))
    return u_new, loss_new, grad_new, step * alpha.view(shape).to(step.dtype)


def _accelerated(problem, optimizer, accel, new_state, u, grad, step, u_p, loss_p, grad_p, active, shape):
    """The subspace-accelerated point where it beats the optimizer's own step ``u_p``.

    Both evaluated points (the step's and the candidate's) join the history whether or not the
    candidate is taken: each is a valid secant sample, and the history then does not depend on the
    other samples of a batch. A candidate is taken where it lowers the loss. Where it is
    taken, an optimizer with ``state_follows_taken_step`` (the Metamizer) has its state rescaled
    by |taken step| / |its step|, so the network sees the length actually taken (measured with
    memory 5: without it, Burgers mu=0.3 at 20 it/step went 1.3e-5 -> 1.5, with it 3e-5).
    Baselines keep their own state (their ``shrink`` means a learning-rate cut)."""
    correction = accel.propose(u_p, grad_p) * active.view(shape).to(u_p.dtype)
    u_a = problem.apply(u_p, correction)
    loss_a, grad_a = problem.loss_and_grad(u_a)
    accel.push(u_p, grad_p)
    accel.push(u_a, grad_a)
    # the loss decides, also for energies (cloth) whose residual is a gradient norm: requiring both
    # to fall was measured to cost the cloth curtain 100x (relative residual 1e-5 -> 2e-3 at 100 it)
    better = active & torch.isfinite(loss_a) & (loss_a < loss_p)
    if bool(better.any()) and getattr(optimizer, "state_follows_taken_step", False):
        taken = (u_a - u).flatten(1).norm(dim=1)
        own = step.flatten(1).norm(dim=1).clamp_min(1e-300)
        optimizer.shrink(new_state, torch.where(better, taken / own, torch.ones_like(taken)).to(step.dtype))
    pick = better.view(shape)
    return torch.where(pick, u_a, u_p), torch.where(better, loss_a, loss_p), torch.where(pick, grad_a, grad_p)


def iterate(problem, optimizer, u: torch.Tensor, state, *, iterations: Optional[int] = None,
            tol: Optional[float] = None, max_iterations: int = 1000, guard: bool = False,
            guard_growth: float = 1.0, guard_shrink: float = 0.25, guard_retries: int = 3,
            line_search: bool = False, accelerate: int = 0,
            callback: Optional[Callable] = None) -> SolveResult:
    """Run the optimizer loop from ``u`` with optimizer ``state``; returns a SolveResult.

    ``line_search``: rescale each proposed step by the alpha minimizing the loss along it (see
    ``_line_search``: two extra kernel evaluations per iteration, no extra network pass).
    ``accelerate``: memory m of the subspace acceleration (``optim/accelerate.py``; one extra
    kernel evaluation per iteration, kept only where it lowers the loss); 0 = off."""
    _check_stopping(iterations, tol, max_iterations)
    accel = (SubspaceAccelerator(accelerate, getattr(problem, "subspace_model", "energy"))
             if accelerate else None)
    limit = iterations if iterations is not None else max_iterations
    loss, grad = problem.loss_and_grad(u)
    if not bool(torch.isfinite(loss).all()):
        raise DivergenceError("the starting point already has a non-finite residual")
    result = SolveResult(u=u, state=state)
    residual = problem.residual_from(loss, grad) if hasattr(problem, "residual_from") else loss
    # divergence is judged on the residual (an MSR, or a gradient RMS for energies that can be <= 0),
    # never on a loss that may start at exactly 0
    start = residual.abs().clamp_min(1e-300)
    result.residuals.append(residual)
    if accel is not None:
        accel.push(u, grad)
    n = u.shape[0]
    shape = (-1,) + (1,) * (u.dim() - 1)
    for it in range(limit):
        # a sample whose gradient is exactly zero is at a stationary point: it does not move
        active = grad.flatten(1).abs().amax(1) > 0
        if tol is not None:
            active = active & (residual > tol)
        if not bool(active.any()):
            break
        step, new_state = optimizer.step(grad, state)
        step = step * active.view(shape).to(step.dtype)
        u_new = problem.apply(u, step)
        loss_new, grad_new = problem.loss_and_grad(u_new)
        if line_search:
            u_new, loss_new, grad_new, step = _line_search(problem, optimizer, new_state, u, loss, step,
                                                           u_new, loss_new, grad_new, active, shape)
        if guard:
            for _ in range(guard_retries + 1):
                bad = active & (~torch.isfinite(loss_new) | (loss_new > loss + guard_growth * loss.abs()))
                if not bool(bad.any()):
                    break
                result.guard_rejections += int(bad.sum())
                shrink = torch.where(bad, guard_shrink, 1.0).to(step.dtype)
                step = step * shrink.view(shape)
                optimizer.shrink(new_state, shrink)
                u_new = problem.apply(u, step)
                loss_new, grad_new = problem.loss_and_grad(u_new)
            still = active & (~torch.isfinite(loss_new) | (loss_new > loss + guard_growth * loss.abs()))
            if bool(still.any()):  # give up on this iteration for those samples: stay put
                keep = still.view(shape)
                u_new = torch.where(keep, u, u_new)
                loss_new = torch.where(still, loss, loss_new)
                grad_new = torch.where(keep, grad, grad_new)
        else:
            res_new = problem.residual_from(loss_new, grad_new) if hasattr(problem, "residual_from") else loss_new
            if (not bool(torch.isfinite(loss_new).all()) or not bool(torch.isfinite(res_new).all())
                    or bool((res_new.abs() > DIVERGENCE_FACTOR * start).any())):
                worst = int(torch.argmax(torch.nan_to_num(res_new.abs(), nan=float("inf"))))
                raise DivergenceError(
                    f"optimizer diverged at iteration {it + 1}: sample {worst} has residual "
                    f"{float(res_new[worst]):.3e} (started at {float(start[worst]):.3e}); "
                    "enable the step guard (guard=True) or use more iterations per time step")
        if accel is not None:
            u_new, loss_new, grad_new = _accelerated(problem, optimizer, accel, new_state, u, grad, step,
                                                     u_new, loss_new, grad_new, active, shape)
        u, loss, grad, state = u_new, loss_new, grad_new, new_state
        residual = problem.residual_from(loss, grad) if hasattr(problem, "residual_from") else loss
        result.residuals.append(residual)
        result.iterations = it + 1
        if callback is not None:
            callback(it + 1, u, residual)
    else:
        result.hit_cap = tol is not None and bool((residual > tol).any())
    result.u, result.state = u, state
    return result


def default_optimizer(problem):
    """The shipped Metamizer of the problem's dimension; a 3-D problem on CPU runs the 3-D network's
    fast module (optim/fast.py: the same steps to ~1e-6, a 2-5x faster forward; built once per
    process), as the smoke sims do."""
    dims = len(problem.shape) - 2
    if dims == 3 and torch.device(problem.device).type == "cpu":
        from metaphys.optim.fast import FastMetamizer, shipped_fast_module
        return FastMetamizer(shipped_fast_module(3))
    from metaphys.optim.metamizer import Metamizer
    return Metamizer(device=problem.device, dims=dims)


def solve(problem, optimizer=None, *, iterations: Optional[int] = None, tol: Optional[float] = None,
          max_iterations: int = 1000, u0: Optional[torch.Tensor] = None, guard: bool = False,
          accelerate: int = DEFAULT_MEMORY, **guard_options) -> SolveResult:
    """Solve a stationary problem (or one time step) from ``u0`` (default: problem.initial_guess()).

    ``accelerate`` (default on, memory 20): the subspace acceleration of ``optim/accelerate.py``;
    0 gives the paper's plain iteration."""
    if optimizer is None:
        optimizer = default_optimizer(problem)
    u = problem.initial_guess() if u0 is None else problem.check_unknown(u0)
    state = optimizer.init_state(tuple(u.shape), device=u.device)
    return iterate(problem, optimizer, u, state, iterations=iterations, tol=tol,
                   max_iterations=max_iterations, guard=guard, accelerate=accelerate, **guard_options)


@dataclass
class StepReport:
    iterations: int
    residual_start: torch.Tensor
    residual_end: torch.Tensor
    guard_rejections: int
    hit_cap: bool


class TimeStepper:
    """Advance a time-dependent problem: per step, iterate the optimizer, then ``problem.advance``.

    The optimizer state carries across time steps as in the paper. ``rescale_on_step`` (the
    paper's Appendix C suggestion) multiplies every sample's scale by this factor at the start of
    a step, so the scale need not climb back up over many iterations.
    """

    def __init__(self, problem, optimizer=None, *, iterations_per_step: Optional[int] = None,
                 tol: Optional[float] = None, max_iterations: int = 200, guard: bool = True,
                 rescale_on_step: Optional[float] = None, line_search: bool = False,
                 accelerate: int = DEFAULT_MEMORY, **guard_options):
        _check_stopping(iterations_per_step, tol, max_iterations)
        if optimizer is None:
            optimizer = default_optimizer(problem)
        self.problem = problem
        self.optimizer = optimizer
        self.iterations_per_step = iterations_per_step
        self.tol = tol
        self.max_iterations = max_iterations
        self.guard = guard
        self.guard_options = guard_options
        self.rescale_on_step = rescale_on_step
        # the subspace acceleration contains the line search's direction and beats it on every
        # eval case (optim/accelerate.py), so the line search is off by default
        self.line_search = bool(line_search)
        self.accelerate = accelerate
        self.u = problem.initial_guess()
        self.state = optimizer.init_state(tuple(self.u.shape), device=self.u.device)
        self.reports: List[StepReport] = []

    def step(self) -> StepReport:
        if self.rescale_on_step is not None:
            self.optimizer.shrink(self.state, torch.full_like(self.state_scale_per_sample(), self.rescale_on_step))
        res = iterate(self.problem, self.optimizer, self.u, self.state, iterations=self.iterations_per_step,
                      tol=self.tol, max_iterations=self.max_iterations, guard=self.guard,
                      line_search=self.line_search, accelerate=self.accelerate, **self.guard_options)
        self.state = res.state
        report = StepReport(res.iterations, res.residuals[0], res.residuals[-1], res.guard_rejections, res.hit_cap)
        self.solution = res.u
        self.u = self.problem.advance(res.u)
        self.reports.append(report)
        return report

    def state_scale_per_sample(self) -> torch.Tensor:
        return torch.ones(self.u.shape[0], dtype=torch.float64, device=self.u.device)
