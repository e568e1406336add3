"""Shared pieces of the simulations: the speed/accuracy dial, per-step records, the argument types
every sim takes (device, optimizer, weights, ...) and the error a blown-up step raises."""
from __future__ import annotations

import contextlib
import inspect
import math
import os
from dataclasses import dataclass, asdict
from typing import Optional

import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.solve import DivergenceError
from metaphys.optim.step_solvers import is_step_solver
from metaphys.spec.types import Bool, Int, Invalid, Number, Type
from metaphys.spec.validate import argument_error, check_arguments


class SimulationDiverged(DivergenceError):
    """A step blew up (non-finite values, a residual past the problem's divergence threshold, a
    cloth torn apart, a flow faster than the grid resolves); the message names the sim, the step,
    what went wrong and the settings that caused it."""


# ---- argument types every sim shares (the spec's vocabulary: spec.types, spec.validate) -----------
class Device(Type):
    """A torch device: "cpu", "cuda", "cuda:N" or a torch.device; CUDA only where it is available."""

    def describe(self):
        return '"cpu", "cuda", "cuda:N" or a torch.device'

    def check(self, value, path):
        if not isinstance(value, (str, torch.device)):
            self.fail(value, path)
        try:
            device = torch.device(value)
        except RuntimeError:
            self.fail(value, path)
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise Invalid(path, f"CUDA is not available here (torch {torch.__version__}), got {value!r}; "
                                    "use device=\"cpu\"")
            if device.index is not None and device.index >= count:
                raise Invalid(path, f"this machine has {count} CUDA device(s) (cuda:0 ... cuda:{count - 1}), "
                                    f"got {value!r}")
        return device


class Optimizer(Type):
    """A built optimizer (sims only use its init_state, step and shrink: ARCHITECTURE.md), or None."""

    def describe(self):
        return ("a built optimizer with init_state, step and shrink (e.g. metaphys.optim.metamizer.Metamizer) "
                "or None for the shipped Metamizer; to load weights from a file pass weights=\"path.pt\"")

    def check(self, value, path):
        if value is not None and not all(callable(getattr(value, m, None)) for m in ("init_state", "step", "shrink")):
            self.fail(value, path)
        return value


class StepSolverArgument(Type):
    """A built step solver (``metaphys.optim.step_solvers``: an object with ``solve(problem, start, state)
    -> StepResult``), or None for the one the sim builds from its solver settings."""

    def describe(self):
        return ("a step solver: an object with solve(problem, start, state) -> StepResult (metaphys.optim."
                "step_solvers: MetamizerStep, NewtonStep, MetamizerThenNewton, KrylovStep), or None")

    def check(self, value, path):
        if value is None or is_step_solver(value):
            return value
        kind = type(value).__name__
        if isinstance(value, type):
            hint = f"the class {value.__name__}, not an object of it (call it: {value.__name__}(...))"
        elif kind == "NewtonSolver":
            hint = "a NewtonSolver, whose solve returns a NewtonResult (wrap it: NewtonStep(solver))"
        elif all(callable(getattr(value, m, None)) for m in ("init_state", "step", "shrink")):
            hint = f"an optimizer ({kind}), which proposes steps but solves nothing (wrap it: MetamizerStep(optimizer, ...))"
        else:
            hint = f"a {kind} (it has no solve method)"
        raise Invalid(path, f"expected {self.describe()}, got {hint}")


class WeightsPath(Type):
    """A path to Metamizer TorchScript weights that exists, or None for the shipped weights."""

    def describe(self):
        return "a path (str or os.PathLike) to Metamizer TorchScript weights, or None for the shipped weights"

    def check(self, value, path):
        if value is None:
            return None
        if not isinstance(value, (str, os.PathLike)):
            self.fail(value, path)
        if not os.path.isfile(value):
            raise Invalid(path, f"file not found: {os.fspath(value)}")
        return value


# The keyword arguments every sim takes beyond its physics; a sim whose spec schema has one of
# them (cloth: guard, threads) uses the schema's entry, which says the same.
COMMON_ARGUMENTS = {
    "device": Device(),
    "optimizer": Optimizer(),
    "weights": WeightsPath(),
    "guard": Bool(),
    "accelerate": Int(0),
    "threads": Int(1, nullable=True),
    "iterations_per_step": Int(1, nullable=True),
    "tol": Number(0, lo_open=True, nullable=True),
    "max_iterations": Int(1),
    "step_solver": StepSolverArgument(),
}
# the settings a built step solver replaces (each sim: these of its arguments that it has)
SOLVER_SETTINGS = ("solver", "tol", "iterations_per_step", "max_iterations", "newton_max_iterations", "guard",
                   "optimizer", "weights", "line_search", "accelerate", "frame_time_budget", "newton_linear", "step_tol")


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - values that do not compare (arrays) differ
        return False


def refuse_solver_settings(owner: str, function, values: dict) -> None:
    """With ``step_solver=`` given, the solver settings it replaces must be left at their defaults (the
    solver object carries its own): else an ArgumentError naming each one, never silently ignored."""
    if values.get("step_solver") is None:
        return
    params = inspect.signature(function).parameters
    given = [n for n in SOLVER_SETTINGS if n in params and n in values and not _same(values[n], params[n].default)]
    if given:
        names = ", ".join(f"{n}=" for n in given)
        raise argument_error(owner, "step_solver", f"expected either a step solver or the solver settings it "
                                                   f"replaces, got step_solver= and {names} (give those settings "
                                                   "to the step solver object)")


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
        check_arguments("SolverSettings", COMMON_ARGUMENTS, vars(self))
        if self.tol is not None:
            self.iterations_per_step = None
        elif self.iterations_per_step is None:
            raise ValueError("SolverSettings needs iterations_per_step >= 1 or a tolerance tol > 0, got neither")

    def solve_kwargs(self) -> dict:
        if self.tol is not None:
            return {"tol": self.tol, "max_iterations": int(self.max_iterations), "accelerate": self.accelerate}
        return {"iterations": int(self.iterations_per_step), "accelerate": self.accelerate}

    def step_solver_kwargs(self) -> dict:
        """``MetamizerStep`` keyword arguments of these settings (``step_solvers.MetamizerStep(optimizer, **...)``)."""
        return {"iterations": None if self.iterations_per_step is None else int(self.iterations_per_step),
                "tol": self.tol, "max_iterations": int(self.max_iterations), "guard": bool(self.guard),
                "accelerate": self.accelerate}


@dataclass
class StepRecord:
    frame: int
    iterations: int
    residual: float            # worst sample's residual at the end of the step
    residual_start: float
    guard_rejections: int      # optimizer steps the step guard rejected (normal; guard_note says when to worry)
    hit_cap: bool              # the iteration cap ended the step before its tolerance
    # convergence gauge (cloth fills all of these; other sims leave the defaults)
    relative_residual: Optional[float] = None  # scale-free: |grad| / max(|grad at start|, |gravity force|)
    max_strain: Optional[float] = None         # max over edges of |e| / L0 - 1 at the end of the frame
    finished_by: str = "metamizer"             # which solver ended the frame: "metamizer" or "newton" (its
    #                                            step solver's StepResult.finished_by)
    newton_iterations: int = 0
    converged: Optional[bool] = None           # relative_residual <= tol (None: no tolerance was asked)
    budget_hit: str = ""                       # "" or what ended the frame before its tolerance: "time", "iterations"

    def as_dict(self) -> dict:
        return asdict(self)


def guard_note(rejections: int, iterations: Optional[int] = None) -> str:
    """What a count of step-guard rejections means, for reports and logs. A rejection is an optimizer
    step that would have raised the loss (or made it non-finite), shrunk and tried again: a normal
    part of a solve. It matters only when frames also miss their tolerance, or when the guard
    rejects every step of a frame (the frame then does not move, and a bake stops)."""
    within = f" in {iterations} optimizer iterations" if iterations else ""
    return (f"the step guard rejected {rejections} optimizer steps{within} (each would have raised the loss and "
            "was shrunk and tried again): normal, it keeps every solve downhill; worry only if frames also miss "
            "the tolerance (reported separately) or the guard rejects every step of a frame (the bake then stops)")


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


def optimizer_for(optimizer=None, weights=None, device="cpu", fastest: bool = False, dims: int = 2):
    """The one factory of a sim's optimizer: ``optimizer`` as given (a built optimizer is the caller's
    choice and runs unchanged), else the Metamizer from ``weights`` (a path; default: the shipped
    weights), self-tested at load; with ``fastest`` that Metamizer runs ``fastest_forward``.
    ``dims=3``: the 3-D network (default weights/metamizer3d.pt, checksummed; the self-test problem is
    2-D, so a 3-D network is checked for its dimension instead; ``fastest`` as in 2-D); an optimizer
    whose network is of another dimension is refused."""
    if optimizer is not None and weights is not None:
        raise ValueError("give either optimizer= or weights= (a path to Metamizer weights), not both")
    if dims == 3:
        if fastest and optimizer is None and weights is None and torch.device(device).type == "cpu":
            from metaphys.optim.fast import FastMetamizer, shipped_fast_module, sim_network_dtype
            dtype = sim_network_dtype(3)   # bfloat16 on CPUs that have it natively
            return FastMetamizer(shipped_fast_module(3, dtype), dtype=dtype)   # built once per process
        loaded = _optimizer_3d(optimizer, weights, device)
        return fastest_forward(loaded, device) if fastest and optimizer is None else loaded
    if optimizer is not None:
        return optimizer
    loaded = default_optimizer(device, weights)
    return fastest_forward(loaded, device) if fastest else loaded


def _optimizer_3d(optimizer, weights, device):
    """The 3-D sims' optimizer: as given, or the Metamizer of ``weights`` / the shipped 3-D weights;
    refused (ValueError naming it) when its network is not 3-D."""
    import os
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.weights_file import DEFAULT_WEIGHTS_3D
    if optimizer is None:
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights must be a path to 3-D Metamizer TorchScript weights, got "
                            f"{type(weights).__name__}")
        optimizer = Metamizer(os.fspath(weights) if weights is not None else DEFAULT_WEIGHTS_3D, device=device)
        source = f"the weights {os.fspath(weights) if weights is not None else DEFAULT_WEIGHTS_3D}"
    else:
        source = f"the optimizer {type(optimizer).__name__}"
    got = getattr(optimizer, "dims", None)
    if got is not None and got != 3:
        raise ValueError(f"a 3-D sim needs a 3-D Metamizer network, but {source} is {got}-D (the shipped "
                         "3-D network: weights/metamizer3d.pt; Metamizer(dims=3) loads it)")
    return optimizer


def fastest_forward(optimizer, device):
    """A plain Metamizer on CPU as the frozen channels_last module of optim/fast.py (the fastest
    measured forward pass, 2-D or 3-D; the same steps to ~1e-6), in the precision the sims run a network
    of its dimension in (``sim_network_dtype``: bfloat16 for 3-D where the CPU has it); any other
    optimizer or device unchanged."""
    import torch
    from metaphys.optim.metamizer import Metamizer
    if torch.device(device).type != "cpu" or type(optimizer) is not Metamizer:
        return optimizer
    from metaphys.optim.fast import FastMetamizer, sim_network_dtype
    dtype = sim_network_dtype(getattr(optimizer, "dims", 2))
    return FastMetamizer(optimizer.model, initial_scale=optimizer.initial_scale, dtype=dtype)


def network_dtype_name(sim) -> Optional[str]:
    """The precision of the network a sim's step solver runs ("float32", "bfloat16"), or None where it
    runs none or does not say (a bake records it beside its threads)."""
    optimizer = getattr(getattr(sim, "step_solver", None), "optimizer", None)
    dtype = getattr(optimizer, "dtype", None)
    if dtype is None and optimizer is not None and hasattr(optimizer, "init_state"):
        dtype = torch.float32   # the plain Metamizer runs its TorchScript module in float32
    return None if dtype is None else str(dtype).replace("torch.", "")


# where a second thread starts to pay on its own work (cells or cloth vertices); below it one thread
SMALL_GRID_CELLS = 96 * 96
# cloth from 64^2 vertices: a frame's sparse factorization and kernels are 12k+ unknowns of work
SMALL_CLOTH_VERTICES = 63 * 63


def threads_for_grid(rows: int, cols: int, cloth: bool = False) -> int:
    """The torch thread count for a grid: 1 up to 96^2 cells (cloth: up to 63^2 vertices), else all
    cores (at most 4). Cloth and smoke sims and the CLI's bakes all use this rule. Measured on a 2-core
    machine (2026-12-07, GOMP_SPINCOUNT bounded; benchmarks/results/cloth_speed.md): a second thread
    takes a cloth frame from 31 to 25 ms at 32^2, 115 -> 87 ms at 64^2, 522 -> 352 ms at 128^2 when the
    other core is idle, but beside one busy process 31 -> 42 ms at 32^2 and 119-150 -> 150-240 ms at
    64^2 (128^2: 1.12x one thread). So small grids keep one thread; cloth from 64^2 and grids from 97^2
    take the idle-core gain. ``threads=`` overrides it (a wedge runs 1 per variant)."""
    small = SMALL_CLOTH_VERTICES if cloth else SMALL_GRID_CELLS
    return 1 if rows * cols <= small else max(1, min(4, os.cpu_count() or 1))


def check_threads(threads, rows: int, cols: int, cloth: bool = False) -> int:
    """``threads`` (None = automatic, ``threads_for_grid``) checked: an int >= 1."""
    if threads is None:
        return threads_for_grid(rows, cols, cloth=cloth)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1 (or None for automatic), got {threads!r}")
    return threads


_blas = None   # threadpoolctl's controller of the BLAS libraries loaded (built once: ~30 ms), or False


def prepare_thread_control(refresh: bool = False):
    """threadpoolctl's controller of the loaded BLAS libraries (built on the first call: it walks every
    loaded library, ~30 ms, so sims call this when they are built, not in their first frame), or
    False without threadpoolctl (a requirements.txt package that a bare `pip install metaphys` lacks:
    only speed depends on it). ``refresh``: find the libraries again (one loaded since, e.g. MKL for
    PARDISO, is otherwise not held)."""
    global _blas
    if _blas is None or (refresh and _blas is not False):
        try:
            from threadpoolctl import ThreadpoolController
            _blas = ThreadpoolController()
        except ImportError:
            _blas = False
    return _blas


def _blas_limit(n: int):
    """A context holding the loaded BLAS libraries to ``n`` threads (no-op without threadpoolctl)."""
    blas = prepare_thread_control()
    return blas.limit(limits=n, user_api="blas") if blas else contextlib.nullcontext()


_warned_spinning = False


def _warn_unbounded_spinning(n: int) -> None:
    """Once per process: more than one thread where libgomp loaded before metaphys set its spin count."""
    global _warned_spinning
    import metaphys
    if n > 1 and not metaphys.OPENMP_WAIT_BOUNDED and not _warned_spinning:
        _warned_spinning = True
        import warnings
        warnings.warn(f"metaphys was imported after torch, so OpenMP's idle threads spin long (libgomp's default): "
                      f"beside another job {n} threads can be several times slower than one "
                      "(benchmarks/results/threads_contention.md). Import metaphys before torch, set "
                      f"GOMP_SPINCOUNT={metaphys.OPENMP_SPINCOUNT} in the environment, or pass threads=1.",
                      RuntimeWarning, stacklevel=4)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads and ``n`` BLAS threads, restoring the caller's
    counts after. BLAS too: numpy's OpenBLAS threads its dot products above 10,000 entries, so Newton's
    CG on a 64^2 cloth (12,288 unknowns) kept a second thread spinning: twice the CPU time of one
    thread at the same wall time (measured: 264 vs 132 CPU ms per frame), a core taken from the rest
    of the machine."""
    _warn_unbounded_spinning(n)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with _blas_limit(n):
            yield
    finally:
        torch.set_num_threads(previous)
