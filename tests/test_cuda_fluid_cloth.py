"""CUDA kernels == C++ CPU kernels == PyTorch twins for fluid_loss_grad, fluid3d_loss_grad, laplace3d_loss_grad
and cloth_loss_grad.

Marked ``cuda``: skipped (with the reason) unless torch sees a GPU and metaphys._C was built with the
CUDA kernels. The checks and the runner are shared with test_cuda_ops.py (cuda_runner.py); without
pytest: ``PYTHONPATH=. python tests/test_cuda_fluid_cloth.py``.
"""
from __future__ import annotations

import sys

import cuda_runner as R
from metaphys.physics import cloth as C
from metaphys.physics import fluid as F
from metaphys.physics import fluid3d as F3
from metaphys.physics import laplace3d as L3
from physics_cases import cloth_args, fluid3d_args, fluid_args, laplace3d_args

# op -> (argument builder (seed, n, h, w), twin, index of an input to move to the wrong device, its name)
OPS = {"fluid_loss_grad": (fluid_args, F.fluid_twin, 4, "force"),
       "cloth_loss_grad": (cloth_args, C.cloth_twin, 3, "pin_w")}
# (N, H, W): odd sizes, tiny grids, and one sample or three on grids of many 32 x 8 blocks (the
# per-sample reductions)
SIZES = [(1, 7, 9), (3, 16, 23), (2, 31, 17), (2, 3, 4), (1, 67, 130), (1, 64, 64), (1, 128, 96), (3, 70, 45)]
LARGE = {"fluid_loss_grad": (3, 515, 1029), "cloth_loss_grad": (2, 300, 517)}


def check_cuda_matches_cpu_and_twin(name, size):
    make, twin, _, _ = OPS[name]
    if name == "cloth_loss_grad" and min(size[1:]) < 2:
        return
    R.check_matches_cpu_and_twin(name, make(sum(size) + 11, *size), twin, f"{name} {size}")


def check_large_grid_and_determinism(name):
    R.check_deterministic(name, OPS[name][0](99, *LARGE[name]), f"{name} large")


def check_stale_scratch(name):
    R.check_stale_scratch(name, OPS[name][0](98, 1, 67, 130), name)


def check_problem_dispatches_to_cuda(name):
    if name == "fluid_loss_grad":
        u, a_old, mask, bc, force, rho, mu, dt, *_ = fluid_args(5, 2, 20, 24)
        prob = F.FluidProblem(mask, bc, a_old=a_old, force=force, rho=rho, mu=mu, dt=dt)
    else:
        u, x, v, pw, px, col, grav, wind, *p = cloth_args(5, 2, 20, 24)
        prob = C.ClothProblem(x, v_old=v, pin_w=pw, pin_x=px, colliders=col, gravity=grav, wind=wind,
                              **dict(zip(C.PARAM_NAMES, p)))
    R.check_problem_dispatch(name, prob, u, name)


def check_cuda_rejects_bad_input(name):
    make, _, at, label = OPS[name]
    R.check_rejects(name, R.to(make(3, 2, 6, 7), "cuda"), at, label)


def check_opcheck_cuda(name):
    R.check_opcheck(name, R.to(OPS[name][0](4, 2, 6, 7), "cuda"))


def check_cloth_hessian_cuda_matches_cpu(size):
    """cloth_hessian (metaphys/physics/cloth_hessian.py): CUDA == CPU kernel, exact and projected,
    the same bits on a second call."""
    import torch
    from physics_cases import assert_close_rel
    args = cloth_args(sum(size) + 5, *size)
    cuda_args = R.to(args, "cuda")
    for project in (False, True, 2):   # exact, every element projected, springs and contacts projected
        want = torch.ops.metaphys.cloth_hessian(*args, project)
        got = torch.ops.metaphys.cloth_hessian(*cuda_args, project)
        assert got.is_cuda and torch.equal(got, torch.ops.metaphys.cloth_hessian(*cuda_args, project))
        # nvcc's FMAs: a few ulps; the Jacobi projection can rotate them into ~1e-10 of the scale
        assert_close_rel(got.cpu(), want, 1e-10 if project is True else 1e-12, f"cloth_hessian {size} project={project}")


# fluid3d_loss_grad (metaphys/physics/fluid3d.py, 3-D): sizes (N, D, H, W); the kernels tile the D*H rows of
# each sample, so these span many 32 x 8 blocks per sample (and the tiny ones a single partial block)
FLUID3D = "fluid3d_loss_grad"
FLUID3D_SIZES = [(1, 5, 7, 9), (3, 6, 16, 23), (2, 3, 3, 4), (1, 17, 33, 40), (3, 12, 20, 70), (1, 3, 130, 67)]


def check_fluid3d_cuda_matches_cpu_and_twin(size):
    n, d, h, w = size
    R.check_matches_cpu_and_twin(FLUID3D, fluid3d_args(sum(size) + 11, n, h, w, d=d), F3.fluid3d_twin,
                                 f"fluid3d {size}")


def check_fluid3d_cuda_per_op():
    """Determinism on a large grid, stale scratch, dispatch through Fluid3DProblem, bad input, opcheck."""
    R.check_deterministic(FLUID3D, fluid3d_args(99, 2, 70, 129, d=45), "fluid3d large")
    R.check_stale_scratch(FLUID3D, fluid3d_args(98, 1, 37, 66, d=19), "fluid3d")
    u, a_old, mask, bc, force, rho, mu, dt, *_ = fluid3d_args(5, 2, 20, 24, d=9)
    prob = F3.Fluid3DProblem(mask, bc, a_old=a_old, force=force, rho=rho, mu=mu, dt=dt)
    R.check_problem_dispatch(FLUID3D, prob, u, FLUID3D)
    R.check_rejects(FLUID3D, R.to(fluid3d_args(3, 2, 6, 7, d=5), "cuda"), 4, "force")
    R.check_opcheck(FLUID3D, R.to(fluid3d_args(4, 2, 6, 7, d=5), "cuda"))


# laplace3d_loss_grad (metaphys/physics/laplace3d.py, 3-D): sizes (N, D, H, W), both stencils and gradient modes
LAPLACE3D = "laplace3d_loss_grad"
LAPLACE3D_SIZES = [(1, 5, 7, 9), (3, 6, 16, 23), (2, 3, 3, 4), (1, 17, 33, 40), (1, 3, 130, 67)]


def check_laplace3d_cuda_matches_cpu_and_twin(size):
    n, d, h, w = size
    for stencil in (27, 7):
        for true_grad in (False, True):
            args = laplace3d_args(sum(size) + stencil, n, h, w, d=d, stencil=stencil, true_grad=true_grad)
            R.check_matches_cpu_and_twin(LAPLACE3D, args, L3.laplace3d_twin, f"laplace3d {size} {stencil} {true_grad}")


def check_laplace3d_cuda_per_op():
    """Determinism on a large grid, stale scratch, dispatch through Laplace3DProblem, bad input, opcheck."""
    R.check_deterministic(LAPLACE3D, laplace3d_args(99, 2, 70, 129, d=45, true_grad=True), "laplace3d large")
    R.check_stale_scratch(LAPLACE3D, laplace3d_args(98, 1, 37, 66, d=19, true_grad=True), "laplace3d")
    u, mask, bc, f, _, _ = laplace3d_args(5, 2, 20, 24, d=9)
    R.check_problem_dispatch(LAPLACE3D, L3.Laplace3DProblem(mask, bc, f), u, LAPLACE3D)
    R.check_rejects(LAPLACE3D, R.to(laplace3d_args(3, 2, 6, 7, d=5), "cuda"), 1, "mask")
    R.check_opcheck(LAPLACE3D, R.to(laplace3d_args(4, 2, 6, 7, d=5, true_grad=True), "cuda"))


HESSIAN_SIZES = [(1, 7, 9), (3, 16, 23), (2, 2, 5), (1, 67, 130)]
CASES = [(name, size) for name in OPS for size in SIZES]
PER_OP = [check_large_grid_and_determinism, check_stale_scratch, check_problem_dispatches_to_cuda,
          check_cuda_rejects_bad_input, check_opcheck_cuda]


def _case_id(case):
    name, (n, h, w) = case
    return f"{name.replace('_loss_grad', '')}-{n}x{h}x{w}"


if R.pytest is not None:
    pytestmark = R.pytest_marks()
    test_cuda_matches_cpu_and_twin, test_cuda_per_op = R.pytest_tests(check_cuda_matches_cpu_and_twin, CASES, _case_id,
                                                                      PER_OP, list(OPS))

    @R.pytest.mark.parametrize("size", HESSIAN_SIZES, ids=lambda s: "x".join(map(str, s)))
    def test_cuda_cloth_hessian_matches_cpu(size):
        check_cloth_hessian_cuda_matches_cpu(size)

    @R.pytest.mark.parametrize("size", FLUID3D_SIZES, ids=lambda s: "x".join(map(str, s)))
    def test_cuda_fluid3d_matches_cpu_and_twin(size):
        check_fluid3d_cuda_matches_cpu_and_twin(size)

    def test_cuda_fluid3d_per_op():
        check_fluid3d_cuda_per_op()

    @R.pytest.mark.parametrize("size", LAPLACE3D_SIZES, ids=lambda s: "x".join(map(str, s)))
    def test_cuda_laplace3d_matches_cpu_and_twin(size):
        check_laplace3d_cuda_matches_cpu_and_twin(size)

    def test_cuda_laplace3d_per_op():
        check_laplace3d_cuda_per_op()

if __name__ == "__main__":
    sys.exit(R.run_script(R.script_checks(check_cuda_matches_cpu_and_twin, CASES, _case_id, PER_OP, list(OPS))
                          + [(f"cloth_hessian_cuda_matches_cpu[{s}]", check_cloth_hessian_cuda_matches_cpu, (s,))
                             for s in HESSIAN_SIZES]
                          + [(f"fluid3d_cuda_matches_cpu_and_twin[{s}]", check_fluid3d_cuda_matches_cpu_and_twin, (s,))
                             for s in FLUID3D_SIZES]
                          + [("fluid3d_cuda_per_op", check_fluid3d_cuda_per_op, ())]
                          + [(f"laplace3d_cuda_matches_cpu_and_twin[{s}]", check_laplace3d_cuda_matches_cpu_and_twin,
                              (s,)) for s in LAPLACE3D_SIZES]
                          + [("laplace3d_cuda_per_op", check_laplace3d_cuda_per_op, ())]))
