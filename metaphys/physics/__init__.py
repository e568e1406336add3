"""Physics: one module per PDE (problem class + PyTorch twin of its kernel)."""
from metaphys.physics.base import Problem
from metaphys.physics.laplace import LaplaceProblem, frame_mask
from metaphys.physics.diffusion import DiffusionProblem
from metaphys.physics.wave import WaveProblem
from metaphys.physics.burgers import BurgersProblem
from metaphys.physics.fluid import (FluidProblem, add_obstacle, corner_velocity, density_problem, fluid_geometry,
                                    fluid_metrics)
from metaphys.physics.fluid3d import Fluid3DProblem
from metaphys.physics.laplace3d import Laplace3DProblem, frame_mask3d
from metaphys.physics.cloth import ClothProblem, max_stretch, rest_grid, rotation_matrix

__all__ = ["Problem", "LaplaceProblem", "DiffusionProblem", "WaveProblem", "BurgersProblem", "frame_mask",
           "FluidProblem", "fluid_metrics", "fluid_geometry", "add_obstacle", "density_problem", "corner_velocity",
           "Fluid3DProblem", "Laplace3DProblem", "frame_mask3d", "ClothProblem", "rest_grid", "max_stretch", "rotation_matrix"]
