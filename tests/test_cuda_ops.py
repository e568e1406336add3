"""CUDA kernels == C++ CPU kernels == PyTorch twins, for the grid ops (laplace, diffusion, wave, burgers).

Marked ``cuda``: skipped (with the reason) unless torch sees a GPU and metaphys._C was built with
the CUDA kernels. benchmarks/gpu_check.sh builds the extension with CUDA and runs
``pytest -m cuda``; without pytest it runs this file as a script (``python tests/test_cuda_ops.py``).
The CUDA bindings fill their outputs with NaN before the launch, so any element a kernel fails to
write shows up as a non-finite value here.
"""
from __future__ import annotations

import os
import sys
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from metaphys import _ops  # noqa: E402
from physics_cases import OPS, assert_close_rel, gen, kernel, make_problem  # noqa: E402

try:
    import pytest
except ImportError:
    pytest = None

GRID_OPS = ["laplace_loss_grad", "diffusion_loss_grad", "wave_loss_grad", "burgers_loss_grad"]
SIZES = [(1, 1, 7, 9), (3, 1, 16, 23), (2, 1, 31, 17), (2, 1, 67, 130), (1, 1, 3, 4)]
# the CPU kernels are compiled without FMA contraction, nvcc contracts: a few ulps apart
REL = 1e-12


def skip_reason():
    if not torch.cuda.is_available():
        return "torch.cuda is not available (no GPU or a CPU-only torch)"
    if not _ops.kernels_available():
        return "metaphys._C is not built (run `make build`)"
    if not _ops.cuda_kernels_available():
        return "metaphys._C was built without the CUDA kernels (needs a CUDA torch and CUDA_HOME at build time)"
    return None


def _to(args, device):
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def _mask_of(name, args):
    return args[{"laplace_loss_grad": 1, "diffusion_loss_grad": 2, "wave_loss_grad": 3,
                 "burgers_loss_grad": 2}[name]]


# --- checks (plain functions, so this file also runs without pytest) ----------------------------

def check_cuda_matches_cpu(name, size, stencil, true_grad):
    twin, make = OPS[name]
    frame = 1 if size[2] > 4 else 0
    args = make(gen(sum(size) * 7 + stencil), size, frame=frame) + (stencil, true_grad)
    l_cpu, g_cpu = kernel(name)(*args)
    cuda_args = _to(args, "cuda")
    l_gpu, g_gpu = kernel(name)(*cuda_args)
    assert l_gpu.is_cuda and g_gpu.is_cuda
    assert_close_rel(l_gpu.cpu(), l_cpu, REL, f"{name} {size} loss (CUDA vs CPU)")
    assert_close_rel(g_gpu.cpu(), g_cpu, REL, f"{name} {size} grad (CUDA vs CPU)")
    l_tw, g_tw = twin(*cuda_args)
    assert_close_rel(l_gpu, l_tw, REL, f"{name} {size} loss (CUDA vs twin on GPU)")
    assert_close_rel(g_gpu, g_tw, REL, f"{name} {size} grad (CUDA vs twin on GPU)")
    mask = _mask_of(name, cuda_args)
    assert float((g_gpu * mask).abs().max()) == 0.0, "gradient must vanish on Dirichlet cells"


def check_large_grid_and_determinism(name):
    """Many blocks per sample (the two-level loss reduction) and bitwise-repeatable results."""
    _, make = OPS[name]
    args = make(gen(99), (3, 1, 515, 1029)) + (9, False)
    l_cpu, g_cpu = kernel(name)(*args)
    cuda_args = _to(args, "cuda")
    l1, g1 = kernel(name)(*cuda_args)
    l2, g2 = kernel(name)(*cuda_args)
    assert torch.equal(l1, l2) and torch.equal(g1, g2), "CUDA results differ between two identical calls"
    assert_close_rel(l1.cpu(), l_cpu, REL, f"{name} large loss")
    assert_close_rel(g1.cpu(), g_cpu, REL, f"{name} large grad")


def check_problem_dispatches_to_cuda(name):
    """Problem.loss_and_grad on CUDA tensors runs the CUDA kernel and agrees with the CPU problem."""
    prob, u = make_problem(name, 5, size=(2, 1, 20, 24), true_grad=False)
    old = _ops.backend()
    try:
        _ops.set_backend("kernel")
        assert _ops.use_kernel(name, u.cuda())
        l_gpu, g_gpu = prob.to("cuda").loss_and_grad(u.cuda())
        l_cpu, g_cpu = prob.loss_and_grad(u)
    finally:
        _ops.set_backend(old)
    assert_close_rel(l_gpu.cpu(), l_cpu, REL, f"{name} problem loss")
    assert_close_rel(g_gpu.cpu(), g_cpu, REL, f"{name} problem grad")


def check_cuda_rejects_bad_input(name):
    _, make = OPS[name]
    args = list(_to(make(gen(3), (2, 1, 6, 7)), "cuda")) + [9, False]
    mask_at = GRID_OPS.index(name)
    mask_at = [1, 2, 3, 2][mask_at]
    cases = []
    a = list(args)
    a[mask_at] = a[mask_at].cpu()
    cases.append((a, "mask is on cpu but the unknown is on cuda"))
    a = list(args)
    a[0] = a[0].float()
    cases.append((a, "must be float64"))
    a = list(args)
    a[-2] = 7
    cases.append((a, "stencil must be 9"))
    for bad, msg in cases:
        try:
            kernel(name)(*bad)
        except RuntimeError as exc:
            assert msg in str(exc), f"expected {msg!r} in {str(exc)!r}"
        else:
            raise AssertionError(f"{name}: no error for bad input (expected {msg!r})")


def check_opcheck_cuda(name):
    _, make = OPS[name]
    for true_grad in (False, True):
        args = _to(make(gen(4), (2, 1, 6, 7)), "cuda")
        u = args[0].clone().requires_grad_(True)
        torch.library.opcheck(kernel(name), (u,) + args[1:] + (9, true_grad),
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                          "test_aot_dispatch_dynamic"))


EQUAL_CASES = [(name, size, st, tg) for name in GRID_OPS for size in SIZES for st in (9, 5) for tg in (False, True)]


def _case_id(case):
    name, size, st, tg = case
    return f"{name.replace('_loss_grad', '')}-{size[0]}x{size[2]}x{size[3]}-{st}pt-{'true' if tg else 'pseudo'}"


if pytest is not None:
    _reason = skip_reason()
    pytestmark = [pytest.mark.cuda, pytest.mark.skipif(_reason is not None, reason=_reason or "")]

    @pytest.mark.parametrize("case", EQUAL_CASES, ids=_case_id)
    def test_cuda_matches_cpu_and_twin(case):
        check_cuda_matches_cpu(*case)

    @pytest.mark.parametrize("name", GRID_OPS)
    def test_large_grid_and_determinism(name):
        check_large_grid_and_determinism(name)

    @pytest.mark.parametrize("name", GRID_OPS)
    def test_problem_dispatches_to_cuda(name):
        check_problem_dispatches_to_cuda(name)

    @pytest.mark.parametrize("name", GRID_OPS)
    def test_cuda_rejects_bad_input(name):
        check_cuda_rejects_bad_input(name)

    @pytest.mark.parametrize("name", GRID_OPS)
    def test_opcheck_cuda(name):
        check_opcheck_cuda(name)


def main() -> int:
    """Runner for machines without pytest: every check, one line each, exit status 1 on failure."""
    reason = skip_reason()
    if reason:
        print(f"SKIPPED: {reason}")
        return 0
    checks = [(f"cuda_matches_cpu[{_case_id(c)}]", check_cuda_matches_cpu, c) for c in EQUAL_CASES]
    for name in GRID_OPS:
        for fn in (check_large_grid_and_determinism, check_problem_dispatches_to_cuda, check_cuda_rejects_bad_input,
                   check_opcheck_cuda):
            checks.append((f"{fn.__name__}[{name}]", fn, (name,)))
    failed = 0
    for label, fn, args in checks:
        try:
            fn(*args)
            print(f"PASS {label}")
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {label}\n{traceback.format_exc()}")
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
