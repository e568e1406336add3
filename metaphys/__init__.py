"""metaphys: physics simulation driven by a learned scale-invariant neural optimizer (Metamizer).

Public names are imported lazily (importing metaphys does no work and loads no weights):
ClothSim, SmokeSim (SmokeSim3D for a 3-tuple resolution), DiffusionSim, WaveSim, BurgersSim, solve_poisson, solve, Metamizer.
"""
from metaphys.version import __version__

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
