"""The one list of physics ops. Each entry names, for one PDE, every piece the house needs:

* ``kernel``     the compiled op ``torch.ops.metaphys.<pde>_loss_grad`` (csrc/<pde>/, bindings.cpp)
                 and its fake kernel and autograd formula (``_fake`` registers every kernel listed here)
* ``problem``    its ``Problem`` class (``metaphys.physics.<pde>``), whose ``twin`` is the PyTorch twin
* ``generators`` the seeded random problems that train on it (``metaphys.problems.GENERATORS``);
                 empty for the paper's generalisation tests, which are never trained on
* ``eval_case``  a held-out problem of ``metaphys.eval.cases``: (builder, its keyword arguments)
* ``cuda_test``  the test file that compares its CUDA kernel with the CPU kernel

Names only, no imports: ``_fake`` reads this while ``metaphys._ops`` loads, below ``physics``, so the
classes and builders are looked up by name where they are used.
tests/test_op_registry.py checks each entry against the code, so a new op that misses a piece fails
there (the recipe in ARCHITECTURE.md, "Adding a PDE", lists the files).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Op:
    name: str                          # the PDE; its module is metaphys.physics.<name>
    problem: str                       # class name in that module
    generators: Tuple[str, ...]        # names in metaphys.problems.GENERATORS
    eval_case: Tuple[str, Dict]        # (builder in metaphys.eval.cases, its keyword arguments besides size)
    cuda_test: str                     # file in tests/

    @property
    def kernel(self) -> str:
        return f"{self.name}_loss_grad"

    @property
    def module(self) -> str:
        return f"metaphys.physics.{self.name}"


OPS: Tuple[Op, ...] = (
    Op("laplace", "LaplaceProblem", ("laplace",), ("laplace_random", {"n": 1}), "test_cuda_ops.py"),
    Op("diffusion", "DiffusionProblem", ("diffusion", "diffusion_low"), ("diffusion_rotating", {"D": 0.1}),
       "test_cuda_ops.py"),
    Op("wave", "WaveProblem", (), ("wave_emitters", {"c": 1.0}), "test_cuda_ops.py"),
    Op("burgers", "BurgersProblem", (), ("burgers_random", {"mu": 1.0}), "test_cuda_ops.py"),
    Op("fluid", "FluidProblem", ("fluid",), ("fluid_cylinder", {"rho": 1.0, "mu": 0.1}), "test_cuda_fluid_cloth.py"),
    # the 3-D ops train the 3-D Metamizer only (configs/cpu3d.yaml, TrainConfig.dims = 3; issue #28)
    Op("fluid3d", "Fluid3DProblem", ("fluid3d",), ("fluid3d_cavity", {"rho": 1.0, "mu": 0.1}),
       "test_cuda_fluid_cloth.py"),
    Op("laplace3d", "Laplace3DProblem", ("laplace3d",), ("laplace3d_random", {"n": 1}), "test_cuda_fluid_cloth.py"),
    Op("cloth", "ClothProblem", ("cloth", "cloth_product"), ("cloth_hanging", {"material": "a_1000_10_0.01"}),
       "test_cuda_fluid_cloth.py"),
)

BY_NAME: Dict[str, Op] = {op.name: op for op in OPS}
KERNELS: Tuple[str, ...] = tuple(op.kernel for op in OPS)
