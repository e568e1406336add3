"""Simulations for animation pipelines and game tooling (thin layers over physics + optimizer)."""
from metaphys.sims.cloth import ClothSim
from metaphys.sims.smoke import SmokeSim

__all__ = ["ClothSim", "SmokeSim"]
