"""CUDA kernels == C++ CPU kernels == PyTorch twins, for the grid ops (laplace, diffusion, wave, burgers).

Marked ``cuda``: skipped (with the reason) unless torch sees a GPU and metaphys._C was built with the
CUDA kernels. The checks and the runner are shared with test_cuda_fluid_cloth.py (cuda_runner.py);
without pytest: ``PYTHONPATH=. python tests/test_cuda_ops.py``.
"""
from __future__ import annotations

import sys

import cuda_runner as R
from physics_cases import OPS, gen, make_problem

GRID_OPS = ["laplace_loss_grad", "diffusion_loss_grad", "wave_loss_grad", "burgers_loss_grad"]
MASK_AT = {"laplace_loss_grad": 1, "diffusion_loss_grad": 2, "wave_loss_grad": 3, "burgers_loss_grad": 2}
# (N, C, H, W): odd sizes, tiny grids, and one sample or three on grids of many 32 x 8 blocks
SIZES = [(1, 1, 7, 9), (3, 1, 16, 23), (2, 1, 31, 17), (2, 1, 67, 130), (1, 1, 3, 4), (1, 1, 64, 64), (3, 1, 70, 45)]


def args_of(name, size, stencil=9, true_grad=False, seed=0):
    _, make = OPS[name]
    return make(gen(seed), size, frame=1 if size[2] > 4 else 0) + (stencil, true_grad)


def check_cuda_matches_cpu(name, size, stencil, true_grad):
    twin, _ = OPS[name]
    args = args_of(name, size, stencil, true_grad, seed=sum(size) * 7 + stencil)
    cuda_args, grad = R.check_matches_cpu_and_twin(name, args, twin, f"{name} {size}")
    assert float((grad * cuda_args[MASK_AT[name]]).abs().max()) == 0.0, "gradient must vanish on Dirichlet cells"


def check_large_grid_and_determinism(name):
    R.check_deterministic(name, args_of(name, (3, 1, 515, 1029), seed=99), f"{name} large")


def check_stale_scratch(name):
    R.check_stale_scratch(name, args_of(name, (1, 1, 67, 130), true_grad=True, seed=98), name)


def check_problem_dispatches_to_cuda(name):
    prob, u = make_problem(name, 5, size=(2, 1, 20, 24), true_grad=False)
    R.check_problem_dispatch(name, prob, u, name)


def check_cuda_rejects_bad_input(name):
    cuda_args = R.to(args_of(name, (2, 1, 6, 7), seed=3), "cuda")
    bad_stencil = cuda_args[:-2] + (7, False)
    R.check_rejects(name, cuda_args, MASK_AT[name], "mask", extra=[(bad_stencil, "stencil must be 9")])


def check_opcheck_cuda(name):
    for true_grad in (False, True):
        R.check_opcheck(name, R.to(args_of(name, (2, 1, 6, 7), true_grad=true_grad, seed=4), "cuda"))


CASES = [(name, size, st, tg) for name in GRID_OPS for size in SIZES for st in (9, 5) for tg in (False, True)]
PER_OP = [check_large_grid_and_determinism, check_stale_scratch, check_problem_dispatches_to_cuda,
          check_cuda_rejects_bad_input, check_opcheck_cuda]


def _case_id(case):
    name, size, st, tg = case
    return f"{name.replace('_loss_grad', '')}-{size[0]}x{size[2]}x{size[3]}-{st}pt-{'true' if tg else 'pseudo'}"


if R.pytest is not None:
    pytestmark = R.pytest_marks()
    test_cuda_matches_cpu_and_twin, test_cuda_per_op = R.pytest_tests(check_cuda_matches_cpu, CASES, _case_id, PER_OP,
                                                                      GRID_OPS)

if __name__ == "__main__":
    sys.exit(R.run_script(R.script_checks(check_cuda_matches_cpu, CASES, _case_id, PER_OP, GRID_OPS)))
