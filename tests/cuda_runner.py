"""The shared part of the CUDA test files (test_cuda_ops.py: laplace, diffusion, wave, burgers;
test_cuda_fluid_cloth.py: fluid, cloth): the skip rule, the checks every op gets (CUDA kernel ==
C++ CPU kernel == PyTorch twin on the GPU, many-block reductions, determinism, stale scratch memory,
dispatch through a Problem, bad input, opcheck) and a runner for machines without pytest.

The CUDA bindings fill their outputs with NaN before the launch, so an element a kernel fails to
write shows up as a non-finite value. benchmarks/gpu_check.sh runs ``pytest -m cuda tests/test_cuda*.py``
(or each file as a script, with the repository on PYTHONPATH).
"""
from __future__ import annotations

import traceback

import torch

from metaphys import _ops
from physics_cases import assert_close_rel, kernel

try:
    import pytest
except ImportError:
    pytest = None

# nvcc contracts multiply-adds into FMAs, the CPU build does not: a few ulps apart
REL = 1e-12


def skip_reason():
    if not torch.cuda.is_available():
        return "torch.cuda is not available (no GPU or a CPU-only torch)"
    if not _ops.kernels_available():
        return "metaphys._C is not built (run `make build`)"
    if not _ops.cuda_kernels_available():
        return "metaphys._C was built without the CUDA kernels (needs a CUDA torch and CUDA_HOME at build time)"
    return None


def pytest_marks():
    """``pytestmark`` of a CUDA test file: marked ``cuda`` and skipped (with the reason) without a GPU build."""
    reason = skip_reason()
    return [pytest.mark.cuda, pytest.mark.skipif(reason is not None, reason=reason or "")]


def to(args, device):
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def _close(got, want, what):
    assert_close_rel(got.cpu(), want.cpu(), REL, what)


# --- checks ------------------------------------------------------------------------------------

def check_matches_cpu_and_twin(name, args, twin, what):
    """CUDA kernel vs CPU kernel and vs the twin on the GPU; returns (CUDA args, CUDA grad)."""
    l_cpu, g_cpu = kernel(name)(*args)
    cuda_args = to(args, "cuda")
    l_gpu, g_gpu = kernel(name)(*cuda_args)
    assert l_gpu.is_cuda and g_gpu.is_cuda
    _close(l_gpu, l_cpu, f"{what} loss (CUDA vs CPU)")
    _close(g_gpu, g_cpu, f"{what} grad (CUDA vs CPU)")
    l_tw, g_tw = twin(*cuda_args)
    _close(l_gpu, l_tw, f"{what} loss (CUDA vs twin on GPU)")
    _close(g_gpu, g_tw, f"{what} grad (CUDA vs twin on GPU)")
    return cuda_args, g_gpu


def check_deterministic(name, args, what):
    """Two identical calls give bitwise equal results, both close to the CPU kernel (large grids:
    many blocks per sample in every reduction)."""
    l_cpu, g_cpu = kernel(name)(*args)
    cuda_args = to(args, "cuda")
    l1, g1 = kernel(name)(*cuda_args)
    l2, g2 = kernel(name)(*cuda_args)
    assert torch.equal(l1, l2) and torch.equal(g1, g2), f"{what}: CUDA results differ between two identical calls"
    _close(l1, l_cpu, f"{what} loss")
    _close(g1, g_cpu, f"{what} grad")


def check_stale_scratch(name, args, what):
    """The kernels allocate their work memory uninitialised and zero only what they read before
    writing: after NaN garbage has passed through the caching allocator, results still match the CPU."""
    junk = torch.full((32 << 20,), float("nan"), dtype=torch.float64, device="cuda")
    del junk
    l_cpu, g_cpu = kernel(name)(*args)
    l_gpu, g_gpu = kernel(name)(*to(args, "cuda"))
    _close(l_gpu, l_cpu, f"{what} loss after NaN garbage")
    _close(g_gpu, g_cpu, f"{what} grad after NaN garbage")


def check_problem_dispatch(name, prob, u, what):
    """Problem.loss_and_grad on CUDA tensors runs the CUDA kernel and agrees with the CPU problem."""
    old = _ops.backend()
    try:
        _ops.set_backend("kernel")
        assert _ops.use_kernel(name, u.cuda())
        l_gpu, g_gpu = prob.to("cuda").loss_and_grad(u.cuda())
        l_cpu, g_cpu = prob.loss_and_grad(u)
    finally:
        _ops.set_backend(old)
    _close(l_gpu, l_cpu, f"{what} problem loss")
    _close(g_gpu, g_cpu, f"{what} problem grad")


def check_rejects(name, cuda_args, device_at, label, extra=()):
    """Wrong device of argument `device_at` (named `label`), float32 unknown, and the `extra`
    (args, message) cases: clear errors."""
    cases = list(extra)
    a = list(cuda_args)
    a[device_at] = a[device_at].cpu()
    cases.append((a, f"{label} is on cpu but the unknown is on cuda"))
    a = list(cuda_args)
    a[0] = a[0].float()
    cases.append((a, "must be float64"))
    for bad, msg in cases:
        try:
            kernel(name)(*bad)
        except RuntimeError as exc:
            assert msg in str(exc), f"expected {msg!r} in {str(exc)!r}"
        else:
            raise AssertionError(f"{name}: no error for bad input (expected {msg!r})")


def check_opcheck(name, cuda_args):
    u = cuda_args[0].clone().requires_grad_(True)
    torch.library.opcheck(kernel(name).default, (u,) + tuple(cuda_args[1:]),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


# --- the test functions of a file, and its runner without pytest -------------------------------

def _check_id(check, name):
    return f"{check.__name__.replace('check_', '')}-{name.replace('_loss_grad', '')}"


def pytest_tests(case_check, cases, case_id, per_op_checks, names):
    """A CUDA test file's two test functions: case_check(*case) for each case, and check(name) for
    each per-op check and op name."""
    @pytest.mark.parametrize("case", cases, ids=case_id)
    def test_cuda_matches_cpu_and_twin(case):
        case_check(*case)

    pairs = [(check, name) for check in per_op_checks for name in names]

    @pytest.mark.parametrize("check,name", pairs, ids=[_check_id(c, n) for c, n in pairs])
    def test_cuda_per_op(check, name):
        check(name)

    return test_cuda_matches_cpu_and_twin, test_cuda_per_op


def script_checks(case_check, cases, case_id, per_op_checks, names):
    """The same checks as pytest_tests, as (label, fn, args) for run_script."""
    checks = [(f"cuda_matches_cpu_and_twin[{case_id(c)}]", case_check, c) for c in cases]
    checks += [(_check_id(c, n), c, (n,)) for c in per_op_checks for n in names]
    return checks


# --- runner without pytest -----------------------------------------------------------------------

def run_script(checks) -> int:
    """checks: (label, fn, args). Runs each, one line each; exit status 1 on any failure."""
    reason = skip_reason()
    if reason:
        print(f"SKIPPED: {reason}")
        return 0
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
