"""The op registry (metaphys/registry.py) against the code: every op has its problem class, twin,
fake kernel, compiled kernel, training generator (or is a held-out-only PDE), eval case, kernel test
case and CUDA test; and no op exists outside the registry. The steps of ARCHITECTURE.md's
"Adding a PDE" recipe are the assertions here."""
import importlib
import inspect
import os

import pytest
import torch

from metaphys import physics, problems
from metaphys.eval import cases
from metaphys.physics.base import Problem
from metaphys.registry import BY_NAME, KERNELS, OPS

import physics_cases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [op.name for op in OPS]


def problem_class(op):
    return getattr(importlib.import_module(op.module), op.problem)


def test_names_are_unique_and_the_kernel_list_follows():
    assert len(set(NAMES)) == len(NAMES) and KERNELS == tuple(f"{n}_loss_grad" for n in NAMES)
    assert set(BY_NAME) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_problem_class_twin_and_export(name):
    op = BY_NAME[name]
    cls = problem_class(op)
    assert issubclass(cls, Problem) and cls.op_name == op.kernel
    assert cls.twin is not Problem.twin and callable(cls.twin), f"{op.problem} has no PyTorch twin"
    assert getattr(physics, op.problem) is cls, f"metaphys.physics does not export {op.problem}"


def test_every_problem_class_with_an_op_is_registered():
    found = set()
    for exported in physics.__all__:
        obj = getattr(physics, exported)
        if inspect.isclass(obj) and issubclass(obj, Problem) and obj.op_name:
            found.add(obj.op_name)
    assert found == set(KERNELS)


@pytest.mark.parametrize("name", NAMES)
def test_generators_make_the_op_problem(name):
    op = BY_NAME[name]
    # wave, burgers: the paper's generalisation tests, never trained on (fluid3d and laplace3d train the 3-D
    # network only: configs/cpu3d.yaml; a 2-D recipe refuses them, tests/test_metamizer3d.py)
    held_out_only = name in ("wave", "burgers")
    assert bool(op.generators) != held_out_only, f"{name}: a trained op needs a generator in metaphys.problems"
    for g in op.generators:
        p = problems.get(g)(1, 16, 16, torch.Generator().manual_seed(0))
        assert isinstance(p, problem_class(op)), (g, type(p))
    trained = {g for o in OPS for g in o.generators}
    assert trained == set(problems.GENERATORS), "a generator no registry op names"


@pytest.mark.parametrize("name", NAMES)
def test_eval_case_builds_the_op_problem(name):
    builder, kwargs = BY_NAME[name].eval_case
    made = getattr(cases, builder)(16, **kwargs)
    problem = made[0] if isinstance(made, tuple) else made
    assert isinstance(problem, problem_class(BY_NAME[name]))


@pytest.mark.parametrize("name", NAMES)
def test_kernel_test_case_and_cuda_test(name):
    op = BY_NAME[name]
    assert op.kernel in physics_cases.FULL_ARGS and op.kernel in physics_cases.TWINS, \
        f"tests/physics_cases.py has no argument builder or twin for {op.kernel}"
    path = os.path.join(ROOT, "tests", op.cuda_test)
    assert os.path.isfile(path) and op.kernel in open(path, encoding="utf-8").read(), \
        f"{op.cuda_test} does not test {op.kernel}"


@pytest.mark.parametrize("name", NAMES)
def test_twin_runs_on_the_test_arguments(name):
    op = BY_NAME[name]
    args = physics_cases.FULL_ARGS[op.kernel](0, 2, 6, 7)
    loss, grad = problem_class(op).twin(*args)
    assert loss.shape == (2,) and grad.shape == args[0].shape and bool(torch.isfinite(grad).all())


@physics_cases.requires_kernels
@pytest.mark.parametrize("name", NAMES)
def test_compiled_and_fake_kernels_exist(name):
    """Every registry op is bound in metaphys._C (csrc/bindings.cpp) and has a fake kernel (_fake.py)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    op = BY_NAME[name]
    assert hasattr(torch.ops.metaphys, op.kernel), f"metaphys._C does not register {op.kernel} (bindings.cpp)"
    args = physics_cases.FULL_ARGS[op.kernel](0, 2, 6, 7)
    with FakeTensorMode() as mode:
        fake = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        loss, grad = physics_cases.kernel(op.kernel)(*fake)
    assert tuple(loss.shape) == (2,) and tuple(grad.shape) == tuple(args[0].shape)
