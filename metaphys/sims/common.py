"""Shared pieces of the simulations: the speed/accuracy dial and per-step records."""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, asdict
from typing import Optional

import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY


@dataclass
class SolverSettings:
    """Iterations per time step, or a residual tolerance with an iteration cap; ``accelerate`` is
    the memory of the subspace acceleration (optim/accelerate.py; 0 = the paper's plain iteration)."""

    iterations_per_step: Optional[int] = 30
    tol: Optional[float] = None
    max_iterations: int = 200
    guard: bool = True
    accelerate: int = DEFAULT_MEMORY

    def __post_init__(self):
        if self.tol is not None:
            if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol > 0):
                raise ValueError(f"tol must be a positive number, got {self.tol!r}")
            self.iterations_per_step = None
        elif self.iterations_per_step is None or int(self.iterations_per_step) < 1:
            raise ValueError(f"iterations_per_step must be >= 1 (or give tol), got {self.iterations_per_step!r}")
        if int(self.max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations!r}")
        if isinstance(self.accelerate, bool) or not isinstance(self.accelerate, int) or self.accelerate < 0:
            raise ValueError(f"accelerate must be an int >= 0 (0 = off), got {self.accelerate!r}")

    def solve_kwargs(self) -> dict:
        if self.tol is not None:
            return {"tol": self.tol, "max_iterations": int(self.max_iterations), "accelerate": self.accelerate}
        return {"iterations": int(self.iterations_per_step), "accelerate": self.accelerate}


@dataclass
class StepRecord:
    frame: int
    iterations: int
    residual: float            # worst sample's residual at the end of the step
    residual_start: float
    guard_rejections: int
    hit_cap: bool
    # convergence gauge (cloth fills all of these; other sims leave the defaults)
    relative_residual: Optional[float] = None  # scale-free: |grad| / max(|grad at start|, |gravity force|)
    max_strain: Optional[float] = None         # max over edges of |e| / L0 - 1 at the end of the frame
    finished_by: str = "metamizer"             # which solver ended the frame: "metamizer" or "newton"
    newton_iterations: int = 0
    converged: Optional[bool] = None           # relative_residual <= tol (None: no tolerance was asked)

    def as_dict(self) -> dict:
        return asdict(self)


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def check_vector(name: str, value, n: int):
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.shape != (n,):
        raise ValueError(f"{name} must have {n} components, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


def default_optimizer(device, weights=None):
    """The Metamizer with the shipped weights (or ``weights``, a path to TorchScript weights), checked by
    the weights self-test; a WeightsError names the file if they are missing, corrupted or cannot solve."""
    import os
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.weights import default_weights_path, self_test, sha256_of
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a path to Metamizer TorchScript weights, got {type(weights).__name__} "
                        "(pass a built optimizer as optimizer=)")
    path = os.fspath(weights) if weights is not None else default_weights_path()
    opt = Metamizer(path, device=device)
    self_test(opt, sha256_of(path), source=path)
    return opt


def optimizer_for(optimizer=None, weights=None, device="cpu", fastest: bool = False):
    """The one factory of a sim's optimizer: ``optimizer`` as given (a built optimizer is the caller's
    choice and runs unchanged), else the Metamizer from ``weights`` (a path; default: the shipped
    weights), self-tested at load; with ``fastest`` that Metamizer runs ``fastest_forward``."""
    if optimizer is not None and weights is not None:
        raise ValueError("give either optimizer= or weights= (a path to Metamizer weights), not both")
    if optimizer is not None:
        return optimizer
    loaded = default_optimizer(device, weights)
    return fastest_forward(loaded, device) if fastest else loaded


def fastest_forward(optimizer, device):
    """A plain Metamizer on CPU as the frozen channels_last module of optim/fast.py (the fastest
    measured forward pass; the same steps to ~1e-6); any other optimizer or device unchanged."""
    import torch
    from metaphys.optim.metamizer import Metamizer
    if torch.device(device).type != "cpu" or type(optimizer) is not Metamizer:
        return optimizer
    from metaphys.optim.fast import FastMetamizer
    return FastMetamizer(optimizer.model, initial_scale=optimizer.initial_scale)


def threads_for_grid(rows: int, cols: int) -> int:
    """Fastest torch thread count for a grid: 1 up to 96^2 (a second thread costs more in
    synchronization than it gains there, and is 10x slower on a busy machine; measured on cloth),
    else all cores (at most 4). Cloth and smoke sims and the CLI's bakes all use this rule."""
    return 1 if rows * cols <= 96 * 96 else max(1, min(4, os.cpu_count() or 1))


def check_threads(threads, rows: int, cols: int) -> int:
    """``threads`` (None = automatic, ``threads_for_grid``) checked: an int >= 1."""
    if threads is None:
        return threads_for_grid(rows, cols)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1 (or None for automatic), got {threads!r}")
    return threads


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads, restoring the caller's count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
