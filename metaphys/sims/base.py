"""The protocol every simulation follows (ClothSim, SmokeSim, DiffusionSim, WaveSim, BurgersSim).

* Construction: the grid first (``ClothSim(rows, cols)``, ``SmokeSim(resolution)``,
  ``DiffusionSim(shape)``, ``WaveSim(shape)``, ``BurgersSim(v0)``: the grid of its initial field),
  everything else by keyword; every sim takes ``optimizer=`` (built) or ``weights=`` (a path) and
  ``device=``; ``sims.common.optimizer_for`` turns them into the optimizer, in one place.
* Solving: every sim holds a step solver, ``step_solver`` (``metaphys.optim.step_solvers``: one
  interface, ``solve(problem, start, state) -> StepResult``), built from its solver settings
  (``iterations_per_step``, ``tol``, ...; cloth: ``solver=``) or given ready-made as
  ``step_solver=``; each step's solve goes through it. ``optimizer`` is the optimizer inside it
  (None for solvers that run none: Newton, Krylov).
* Stepping: ``step()`` advances one step (a frame for cloth and smoke) and returns its
  ``StepRecord``, also kept in ``records``; ``run(n, callback=None)`` steps n times and returns
  ``field`` after each step, stacked.
* Result: ``field`` is the sim's state as a numpy array (cloth: world positions [rows*cols, 3];
  smoke: density; the PDE sims: their unknown). The domain names (``positions``, ``density``,
  ``velocity``, ``pressure``) stay beside it.
* Health and resume: ``finite()``; ``state_dict()`` / ``load_state_dict()`` continue bit for bit.
  The optimizer's per-problem state is saved in the optimizer's own format
  (``optimizer_state`` / ``restore_optimizer_state``), so a bake with any optimizer resumes.
"""
from __future__ import annotations

import operator
from typing import List

import numpy as np

from metaphys.optim.step_solvers import solver_state_dict
from metaphys.sims.common import StepRecord
from metaphys.spec.validate import argument_error


class Sim:
    records: List[StepRecord]
    step_unit = "steps"  # what one step() advances, as messages name it
    step_solver = None   # the StepSolver every step's solve goes through (set by each sim)

    @property
    def optimizer(self):
        """The optimizer the step solver runs (its state is saved in this optimizer's format), or None."""
        return getattr(self.step_solver, "optimizer", None)

    def step(self) -> StepRecord:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def field(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_state_dict(self, sd: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def finite(self) -> bool:
        return bool(np.isfinite(self.field).all())

    def run(self, steps: int, callback=None) -> np.ndarray:
        """Advance ``steps`` (>= 1) steps; ``field`` after each, stacked: [steps, ...]. ``callback(sim)``
        runs after every step (progress bars, early looks at the result)."""
        if isinstance(steps, bool):
            raise TypeError(f"{self.step_unit} must be an integer, got {steps!r}")
        try:
            n = operator.index(steps)
        except TypeError:
            raise TypeError(f"{self.step_unit} must be an integer, got {steps!r}") from None
        if n < 1:
            raise ValueError(f"{self.step_unit} must be >= 1, got {n}")
        out = []
        for _ in range(n):
            self.step()
            out.append(np.array(self.field, copy=True))
            if callback is not None:
                callback(self)
        return np.stack(out)


def check_state_dict(sim: Sim, sd, keys, shapes=None) -> None:
    """Refuse in ``load_state_dict`` what ``state_dict`` of the same kind of sim did not write: not a
    dict, ``keys`` missing, or tensors ``shapes`` {key: shape} of another grid or batch (such a
    state would load and then fail inside ``step()``)."""
    name = type(sim).__name__
    owner = f"{name}.load_state_dict"
    if not isinstance(sd, dict):
        raise argument_error(owner, "state_dict", f"expected the dict {name}.state_dict() returned, "
                                                  f"got {type(sd).__name__}")
    missing = [k for k in keys if k not in sd]
    if missing:
        raise argument_error(owner, "state_dict", f"expected the dict {name}.state_dict() returned, but it lacks "
                                                  f"{', '.join(missing)} (it has: {', '.join(map(str, sd)) or 'nothing'})")
    for key, shape in (shapes or {}).items():
        got = tuple(getattr(sd[key], "shape", ()))
        if got != tuple(shape):
            raise argument_error(owner, "state_dict", f"{key} has shape {list(got)}, this {name} needs "
                                                      f"{list(shape)}: the state is of a sim of another size")


def optimizer_state(optimizer, state):
    """An optimizer's per-problem state as tensors to save: the optimizer's own ``export_state`` where
    it has one, else the fields of its state object (the Metamizer's dataclass)."""
    if state is None:
        return None
    export = getattr(optimizer, "export_state", None)
    return export(state) if export is not None else dict(vars(state))


def restore_optimizer_state(optimizer, saved, shape, device):
    """The state ``optimizer_state`` saved, rebuilt by the optimizer for an unknown of ``shape``:
    a fresh ``init_state`` filled in (``import_state`` where the optimizer has one)."""
    if saved is None:
        return None
    fresh = optimizer.init_state(tuple(shape), device=device)
    load = getattr(optimizer, "import_state", None)
    if load is not None:
        return load(saved, fresh)
    for name, value in saved.items():
        setattr(fresh, name, value.to(device))
    return fresh


def with_solver_state(sd: dict, step_solver) -> dict:
    """A sim's ``state_dict`` with what its step solver keeps across steps (``solver_state_dict``) added
    beside the sim's own keys; a solver key that would hide one of the sim's is refused."""
    saved = solver_state_dict(step_solver)
    clash = sorted(set(saved) & set(sd))
    if clash:
        raise ValueError(f"the step solver's state_dict() has keys the sim's state uses: {', '.join(clash)}; "
                         "rename them in the solver")
    return {**sd, **saved}


def step_residuals(problem, start, result):
    """(residual at the start, at the answer) of a step's StepResult, per sample [N]: the result's own,
    or measured here (``problem.residual``) where a solver of the caller's did not report them."""
    r0 = result.residual_start if result.residual_start is not None else problem.residual(start)
    r1 = result.residual_end if result.residual_end is not None else problem.residual(result.u)
    return r0, r1
