"""metaphys: physics simulation driven by a learned scale-invariant neural optimizer (Metamizer).

Public names are imported lazily (importing metaphys does no work and loads no weights):
ClothSim, SmokeSim (SmokeSim3D for a 3-tuple resolution), DiffusionSim, WaveSim, BurgersSim, solve_poisson, solve, Metamizer.
"""
import os as _os

from metaphys.version import __version__

# OpenMP threads (torch's, and MKL's through its GNU layer) spin ~300,000 times before they sleep when
# they wait for work: beside another job on one of 2 cores a two-thread 128^2 smoke frame took 2-20x
# the time of one thread (2.0 s beside a busy loop, 13 s beside a niced training run, against 0.86 and
# 0.65 s). 3,000 spins keep the quiet machine's two-thread speed (0.43 vs 0.41 s; one thread 0.68 s) and
# bound the loss beside another job to 1.1-1.5x one thread (benchmarks/results/threads_contention.md).
# libgomp reads this once, when it loads (at `import torch`): set here, first, where the user chose none.
OPENMP_SPINCOUNT = "3000"
# whether OpenMP's waiting is bounded in this process: the user chose a policy, or metaphys set the
# spin count before torch (and so libgomp) loaded; sims warn once when they run more than one thread
# without it (metaphys.sims.common.torch_threads)
OPENMP_WAIT_BOUNDED = "GOMP_SPINCOUNT" in _os.environ or "OMP_WAIT_POLICY" in _os.environ
if not OPENMP_WAIT_BOUNDED:
    OPENMP_WAIT_BOUNDED = "torch" not in __import__("sys").modules
    _os.environ["GOMP_SPINCOUNT"] = OPENMP_SPINCOUNT

_LAZY = {
    "ClothSim": "metaphys.sims.cloth", "SmokeSim": "metaphys.sims.smoke",
    "SmokeSim3D": "metaphys.sims.smoke3d",
    "DiffusionSim": "metaphys.sims.pde", "WaveSim": "metaphys.sims.pde", "BurgersSim": "metaphys.sims.pde",
    "solve_poisson": "metaphys.sims.pde", "solve": "metaphys.optim.solve", "TimeStepper": "metaphys.optim.solve",
    "Metamizer": "metaphys.optim.metamizer",
}

__all__ = ["__version__"] + sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metaphys' has no attribute {name!r}")
