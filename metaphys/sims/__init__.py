"""Simulations for animation pipelines and game tooling (thin layers over physics + optimizer)."""
from metaphys.sims.cloth import ClothSim
from metaphys.sims.common import SimulationDiverged
from metaphys.sims.pde import BurgersSim, DiffusionSim, WaveSim, solve_poisson
from metaphys.sims.smoke import SmokeSim
from metaphys.sims.smoke3d import SmokeSim3D
from metaphys.spec.validate import ArgumentError

__all__ = ["ClothSim", "SmokeSim", "SmokeSim3D", "DiffusionSim", "WaveSim", "BurgersSim", "solve_poisson", "SimulationDiverged",
           "ArgumentError"]
