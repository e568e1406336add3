"""Optimizers: the Metamizer, its weights, classical baselines, and the solve/step API."""
from metaphys.optim.metamizer import Metamizer, MetamizerNet, MetamizerState

__all__ = ["Metamizer", "MetamizerNet", "MetamizerState"]
