"""Physics: one module per PDE (problem class + PyTorch twin of its kernel)."""
from metaphys.physics.base import Problem
from metaphys.physics.laplace import LaplaceProblem, frame_mask
from metaphys.physics.diffusion import DiffusionProblem
from metaphys.physics.wave import WaveProblem
from metaphys.physics.burgers import BurgersProblem

__all__ = ["Problem", "LaplaceProblem", "DiffusionProblem", "WaveProblem", "BurgersProblem", "frame_mask"]
