"""Simulations for animation pipelines and game tooling (thin layers over physics + optimizer)."""
from metaphys.sims.cloth import ClothSim
from metaphys.sims.pde import BurgersSim, DiffusionSim, SimulationDiverged, WaveSim, solve_poisson
from metaphys.sims.smoke import SmokeSim

__all__ = ["ClothSim", "SmokeSim", "DiffusionSim", "WaveSim", "BurgersSim", "solve_poisson", "SimulationDiverged"]
