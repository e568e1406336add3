"""One interface for every step solver: ``solver.solve(problem, start, state) -> StepResult``.

A sim's time step is one solve of a Problem from a starting point; what solves it is an object of
this module, held by the sim as ``sim.step_solver`` (ClothSim, SmokeSim, DiffusionSim, WaveSim,
BurgersSim). The objects wrap the solvers that already exist, they do not re-implement them:

* ``MetamizerStep``: the optimizer loop of ``optim/solve.py`` (``iterate``: the Metamizer or any
  optimizer with init_state/step/shrink, the subspace acceleration ``accelerate=m``, the step guard,
  the line search, a fixed iteration count or a tolerance with a cap).
* ``NewtonStep``: ``optim/newton.py``'s ``NewtonSolver`` (Newton-Krylov, ``linear="pcg"``, or a
  factorization per iteration, ``linear="direct"``) for energies.
* ``MetamizerThenNewton``: the Metamizer first, Newton finishing a step it leaves above the
  tolerance (cloth's ``solver="auto"``), with the policy that skips a Metamizer stage that keeps
  missing (after ``skip_after`` misses in a row it runs only every ``retry_every``-th step).
* ``KrylovStep``: ``optim/krylov.py``'s flexible GMRES for linear problems (no preconditioner,
  Jacobi, or the Metamizer as a flexible preconditioner).

``StepSolver`` is the protocol: a ``name`` and ``solve(problem, start, state=None, **options)``.
``state`` is what the solver carries from one step to the next and the sim keeps for it (the
Metamizer's optimizer state; None for Newton and Krylov); the result hands the new one back.
Options a sim may pass (every solver here takes them; a solver of your own for cloth must accept
them, one for the other sims needs none):

* ``scale``: the scale of the step's scale-free gauge (cloth: ``ClothProblem.residual_scale``);
  with it a tolerance is relative (residual / scale) and ``StepResult.relative_end`` is measured.
* ``warm_start``: a function returning where a second-stage solver (Newton) starts, called only
  when that stage runs (cloth: the last step's answer, moved out of the colliders).
* ``progress``: ``progress(iteration, u, relative_residual)`` after each Newton iteration.

Optional methods the sims use where a solver has them: ``init_state(u)`` (the carried state of a
fresh sim), ``optimizer`` (the optimizer inside, whose state format ``state_dict`` saves),
``state_dict()`` / ``load_state_dict(problem, saved)`` (what the solver object itself keeps across
steps -- Newton's lagged factorization, the skip policy's counters -- so a resumed bake continues
bit for bit), ``tol``. ``StepSolverBase`` gives the defaults.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Protocol, runtime_checkable

import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.krylov import fgmres, jacobi_preconditioner, metamizer_preconditioner
from metaphys.optim.newton import NewtonResult, NewtonSolver
from metaphys.optim.solve import iterate

__all__ = ["StepResult", "StepSolver", "StepSolverBase", "MetamizerStep", "NewtonStep", "MetamizerThenNewton",
           "KrylovStep", "is_step_solver", "initial_state", "solver_state_dict", "load_solver_state"]


@dataclass
class StepResult:
    """What every step solver returns. Fields a solver does not measure keep their defaults."""

    u: torch.Tensor                                   # the answer of the step
    state: Any = None                                 # the carried state after the step (Metamizer's; None)
    finished_by: str = ""                             # the solver that ended the step: "metamizer", "newton",
    #                                                   "krylov"; "" when the start already met the tolerance
    iterations: int = 0                               # Metamizer iterations (KrylovStep: its Krylov iterations)
    residuals: List[torch.Tensor] = field(default_factory=list)   # the problem's residual [N] per iteration
    residual_start: Optional[torch.Tensor] = None     # the problem's residual [N] at the start (MSR; gradient RMS
    residual_end: Optional[torch.Tensor] = None       # for energies) and at the answer
    relative_start: Optional[float] = None            # with a ``scale``: the scale-free gauge at the start / end
    relative_end: Optional[float] = None
    converged: Optional[bool] = None                  # within the tolerance (None: no tolerance was asked)
    hit_cap: bool = False                             # the iteration cap (or Newton's budget) ended the step early
    budget_hit: str = ""                              # Newton: "" or "iterations" / "time"
    guard_rejections: int = 0                         # Metamizer steps the step guard rejected
    newton_iterations: int = 0
    krylov_iterations: int = 0                        # Newton-Krylov's CG iterations, or KrylovStep's GMRES ones
    newton: Optional[NewtonResult] = None             # Newton's own result, where it ran


@runtime_checkable
class StepSolver(Protocol):
    """The interface: ``name`` and ``solve(problem, start, state=None, **options) -> StepResult``."""

    name: str

    def solve(self, problem, start: torch.Tensor, state=None, **options) -> StepResult:  # pragma: no cover
        ...


def is_step_solver(value) -> bool:
    """An object (not a class) with a callable ``solve`` and which is no bare NewtonSolver (whose
    ``solve`` returns a NewtonResult: wrap it, ``NewtonStep(solver)``)."""
    return (not isinstance(value, type) and not isinstance(value, NewtonSolver)
            and callable(getattr(value, "solve", None)))


def initial_state(solver, u: torch.Tensor):
    """The carried state a fresh sim starts with: ``solver.init_state(u)`` where it has one, else None."""
    init = getattr(solver, "init_state", None)
    return None if init is None else init(u)


def solver_state_dict(solver) -> dict:
    """What the solver object keeps across steps, to save with the sim (``{}`` where it keeps nothing)."""
    save = getattr(solver, "state_dict", None)
    return {} if save is None else dict(save())


def load_solver_state(solver, problem, saved: dict) -> None:
    """Restore what ``solver_state_dict`` saved (missing keys: a fresh solver's values)."""
    load = getattr(solver, "load_state_dict", None)
    if load is not None:
        load(problem, saved)


def _count(name: str, value) -> int:
    """An iteration count: an integer (numpy's too, never a bool) >= 1, as a Python int."""
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or n < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return n


def _rms(grad: torch.Tensor) -> float:
    """Gradient RMS of sample 0 (the cloth gauge's measure)."""
    return float(grad[0].norm()) / math.sqrt(grad[0].numel())


def _scale_at(problem, start: torch.Tensor) -> float:
    """The gauge's scale where the caller gave none: the problem's ``residual_scale`` at ``start``, else
    the gradient RMS there."""
    grad = problem.loss_and_grad(start)[1]
    if hasattr(problem, "residual_scale"):
        return problem.residual_scale(grad)
    return max(_rms(grad), 1e-300)


class StepSolverBase:
    """Defaults of the optional parts of the interface: no carried state, no optimizer, nothing kept."""

    name = "step solver"
    optimizer = None
    tol: Optional[float] = None

    def init_state(self, u: torch.Tensor):
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, problem, saved: dict) -> None:
        pass

    def solve(self, problem, start: torch.Tensor, state=None, **options) -> StepResult:  # pragma: no cover
        raise NotImplementedError


class MetamizerStep(StepSolverBase):
    """The optimizer loop (``optim.solve.iterate``) as a step solver.

    Stopping: ``iterations=K`` alone runs K iterations; ``tol`` stops each sample at residual <= tol
    (relative to ``scale`` where ``solve`` gets one, the problem's absolute residual otherwise), capped
    at ``iterations`` where given, else ``max_iterations``. ``guard``/``guard_growth``/``guard_shrink``/
    ``guard_retries``: the step guard; ``accelerate``: the subspace acceleration's memory (0 = the paper's
    plain iteration); ``line_search``; ``rescale_on_step``: multiply the carried scale by this factor at
    the start of every step (``TimeStepper``'s option)."""

    name = "metamizer"

    def __init__(self, optimizer, *, iterations: Optional[int] = None, tol: Optional[float] = None,
                 max_iterations: int = 200, guard: bool = True, guard_growth: float = 1.0,
                 guard_shrink: float = 0.25, guard_retries: int = 3, line_search: bool = False,
                 accelerate: int = DEFAULT_MEMORY, rescale_on_step: Optional[float] = None):
        if not all(callable(getattr(optimizer, m, None)) for m in ("init_state", "step", "shrink")):
            raise TypeError(f"MetamizerStep needs an optimizer with init_state, step and shrink (e.g. "
                            f"metaphys.optim.metamizer.Metamizer), got {type(optimizer).__name__}")
        if iterations is None and tol is None:
            raise ValueError("MetamizerStep needs iterations=K or tol=... (with max_iterations), got neither")
        iterations = None if iterations is None else _count("iterations", iterations)
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be > 0 or None, got {tol!r}")
        max_iterations = _count("max_iterations", max_iterations)
        self.optimizer = optimizer
        self.iterations, self.tol, self.max_iterations = iterations, tol, max_iterations
        self.guard, self.guard_growth = bool(guard), float(guard_growth)
        self.guard_shrink, self.guard_retries = float(guard_shrink), int(guard_retries)
        self.line_search, self.accelerate = bool(line_search), int(accelerate)
        self.rescale_on_step = rescale_on_step

    def init_state(self, u: torch.Tensor):
        return self.optimizer.init_state(tuple(u.shape), device=u.device)

    def _stopping(self, scale: Optional[float]) -> dict:
        if self.tol is None:
            return {"iterations": self.iterations}
        tol = self.tol if scale is None else self.tol * scale
        cap = self.iterations if self.iterations is not None else self.max_iterations
        return {"tol": tol, "max_iterations": cap}

    def solve(self, problem, start: torch.Tensor, state=None, *, scale: Optional[float] = None,
              warm_start: Optional[Callable] = None, progress: Optional[Callable] = None) -> StepResult:
        if state is None:
            state = self.init_state(start)
        if self.rescale_on_step is not None:
            factor = torch.full((start.shape[0],), float(self.rescale_on_step), dtype=torch.float64,
                                device=start.device)
            self.optimizer.shrink(state, factor)
        res = iterate(problem, self.optimizer, start, state, guard=self.guard, guard_growth=self.guard_growth,
                      guard_shrink=self.guard_shrink, guard_retries=self.guard_retries,
                      line_search=self.line_search, accelerate=self.accelerate, **self._stopping(scale))
        out = StepResult(u=res.u, state=res.state, finished_by="metamizer", iterations=res.iterations,
                         residuals=res.residuals, residual_start=res.residuals[0], residual_end=res.residuals[-1],
                         hit_cap=res.hit_cap, guard_rejections=res.guard_rejections)
        if scale is not None:
            out.relative_start = float(res.residuals[0][0]) / scale
            out.relative_end = _rms(problem.loss_and_grad(res.u)[1]) / scale
        if self.tol is not None:
            out.converged = (out.relative_end <= self.tol if scale is not None
                             else bool((res.residuals[-1] <= self.tol).all()))
        return out


class NewtonStep(StepSolverBase):
    """``NewtonSolver`` as a step solver: nothing runs where the start already meets its tolerance;
    otherwise Newton solves from ``warm_start()`` (where given) or the start. ``NewtonStep(solver)``
    wraps a built NewtonSolver, ``NewtonStep(tol=..., linear="pcg", ...)`` builds one."""

    name = "newton"

    def __init__(self, newton: Optional[NewtonSolver] = None, **settings):
        if newton is not None and settings:
            raise ValueError("give NewtonStep a built NewtonSolver or its settings, not both")
        if newton is not None and not isinstance(newton, NewtonSolver):
            raise TypeError(f"NewtonStep wraps a metaphys.optim.newton.NewtonSolver, got {type(newton).__name__}")
        self.newton = newton if newton is not None else NewtonSolver(**settings)

    @property
    def newton_solver(self) -> NewtonSolver:
        return self.newton

    @property
    def tol(self) -> float:
        return self.newton.tol

    def _met(self, rel: float, rms: float) -> bool:
        n = self.newton
        return (n.tol > 0 and rel <= n.tol) or (n.atol > 0 and rms <= n.atol)

    def solve(self, problem, start: torch.Tensor, state=None, *, scale: Optional[float] = None,
              warm_start: Optional[Callable] = None, progress: Optional[Callable] = None) -> StepResult:
        grad = problem.loss_and_grad(start)[1]
        if scale is None:
            scale = problem.residual_scale(grad) if hasattr(problem, "residual_scale") else max(_rms(grad), 1e-300)
        rms = _rms(grad)
        rel = rms / scale
        if self._met(rel, rms):
            return StepResult(u=start, state=state, relative_start=rel, relative_end=rel, converged=True)
        return self.finish(problem, start, state, scale=scale, warm_start=warm_start, progress=progress,
                           relative_start=rel)

    def finish(self, problem, start: torch.Tensor, state=None, *, scale: float, warm_start=None, progress=None,
               relative_start: Optional[float] = None) -> StepResult:
        """Newton from ``warm_start()`` (or ``start``), without first checking the start."""
        u0 = warm_start() if warm_start is not None else start
        out = self.newton.solve(problem, u0, scale=scale, callback=progress)
        return StepResult(u=out.u, state=state, finished_by="newton", relative_start=relative_start,
                          relative_end=out.residuals[-1], converged=out.converged, hit_cap=not out.converged,
                          budget_hit=out.budget_hit, newton_iterations=out.iterations,
                          krylov_iterations=out.krylov_iterations, newton=out)

    # the lagged factorization (Newton-Krylov's preconditioner) is kept across steps: saved with the sim
    def state_dict(self) -> dict:
        return {"newton": self.newton.state_dict()}

    def load_state_dict(self, problem, saved: dict) -> None:
        self.newton.load_state_dict(problem, saved.get("newton", {}))


class MetamizerThenNewton(StepSolverBase):
    """The Metamizer's iterations first, stopping early at the tolerance; Newton finishes a step they
    leave above it (from the same warm start as ``NewtonStep`` alone, so both land on the same
    answer). The Metamizer's iterations are wasted when Newton finishes anyway (its answer is not
    Newton's start): after ``skip_after`` misses in a row it only runs on every ``retry_every``-th
    step, and a hit resets the count. Needs a tolerance (the Metamizer's ``tol``), relative to the
    step's ``scale`` (computed at the start where ``solve`` gets none)."""

    name = "auto"

    def __init__(self, metamizer: MetamizerStep, newton: NewtonStep, *, skip_after: int = 3, retry_every: int = 8):
        if not isinstance(metamizer, MetamizerStep) or not isinstance(newton, NewtonStep):
            raise TypeError(f"MetamizerThenNewton(metamizer, newton) takes a MetamizerStep and a NewtonStep, got "
                            f"{type(metamizer).__name__} and {type(newton).__name__}")
        if metamizer.tol is None:
            raise ValueError("MetamizerThenNewton needs a tolerance: give the MetamizerStep tol=...")
        if int(skip_after) < 1 or int(retry_every) < 1:
            raise ValueError(f"skip_after and retry_every must be >= 1, got {skip_after!r} and {retry_every!r}")
        self.metamizer, self.newton = metamizer, newton
        self.skip_after, self.retry_every = int(skip_after), int(retry_every)
        self.misses = 0   # consecutive steps the Metamizer stage missed the tolerance
        self.steps = 0    # steps solved

    @property
    def optimizer(self):
        return self.metamizer.optimizer

    @property
    def newton_solver(self) -> NewtonSolver:
        return self.newton.newton

    @property
    def tol(self) -> float:
        return self.metamizer.tol

    def init_state(self, u: torch.Tensor):
        return self.metamizer.init_state(u)

    def solve(self, problem, start: torch.Tensor, state=None, *, scale: Optional[float] = None,
              warm_start: Optional[Callable] = None, progress: Optional[Callable] = None) -> StepResult:
        if scale is None:
            scale = _scale_at(problem, start)
        run_metamizer = self.misses < self.skip_after or self.steps % self.retry_every == 0
        self.steps += 1
        if not run_metamizer:
            return self.newton.solve(problem, start, state, scale=scale, warm_start=warm_start, progress=progress)
        first = self.metamizer.solve(problem, start, state, scale=scale)
        self.misses = 0 if first.converged else self.misses + 1
        if first.converged:
            return first
        done = self.newton.finish(problem, start, first.state, scale=scale, warm_start=warm_start,
                                  progress=progress, relative_start=first.relative_start)
        done.iterations, done.guard_rejections = first.iterations, first.guard_rejections
        done.residuals, done.residual_start = first.residuals, first.residual_start
        return done

    # the skip policy's counters (the old ClothSim state's keys) and Newton's lagged factorization
    def state_dict(self) -> dict:
        return {"metamizer_misses": self.misses, "substep_count": self.steps, **self.newton.state_dict()}

    def load_state_dict(self, problem, saved: dict) -> None:
        self.misses = int(saved.get("metamizer_misses", 0))
        self.steps = int(saved.get("substep_count", 0))
        self.newton.load_state_dict(problem, saved)


class KrylovStep(StepSolverBase):
    """Flexible GMRES (``optim.krylov.fgmres``) on a linear problem (one with ``residual_field``: the
    diffusion step) from the start: stops at ||r|| <= max(rtol ||r(start)||, atol). ``preconditioner``:
    None, "jacobi", or "metamizer" (``metamizer_preconditioner`` with ``optimizer``, ``steps`` network
    iterations per application)."""

    name = "krylov"

    def __init__(self, *, rtol: float = 1e-10, atol: float = 0.0, restart: int = 40, max_iterations: int = 400,
                 preconditioner: Optional[str] = None, optimizer=None, steps: int = 2):
        if preconditioner not in (None, "jacobi", "metamizer"):
            raise ValueError(f"preconditioner must be None, \"jacobi\" or \"metamizer\", got {preconditioner!r}")
        if (preconditioner == "metamizer") != (optimizer is not None):
            raise ValueError("an optimizer is given with preconditioner=\"metamizer\" (and only then)")
        self.rtol, self.atol, self.restart, self.max_iterations = rtol, atol, restart, max_iterations
        self.preconditioner, self.optimizer, self.steps = preconditioner, optimizer, steps

    def _residual(self, problem, u):
        loss, grad = problem.loss_and_grad(u)
        return problem.residual_from(loss, grad) if hasattr(problem, "residual_from") else loss

    def solve(self, problem, start: torch.Tensor, state=None, *, scale: Optional[float] = None,
              warm_start: Optional[Callable] = None, progress: Optional[Callable] = None) -> StepResult:
        precond = None
        if self.preconditioner == "jacobi":
            precond = jacobi_preconditioner(problem)
        elif self.preconditioner == "metamizer":
            precond = metamizer_preconditioner(problem, self.optimizer, steps=self.steps)
        res = fgmres(problem, start, rtol=self.rtol, atol=self.atol, restart=self.restart,
                     max_iterations=self.max_iterations, preconditioner=precond)
        r0, r1 = self._residual(problem, start), self._residual(problem, res.u)
        out = StepResult(u=res.u, state=state, finished_by="krylov", iterations=res.iterations, residuals=[r0, r1],
                         residual_start=r0, residual_end=r1, converged=bool(res.converged.all()),
                         hit_cap=res.hit_cap, krylov_iterations=res.iterations)
        if scale is not None:
            out.relative_start = float(r0[0]) / scale
            out.relative_end = float(r1[0]) / scale
        return out
