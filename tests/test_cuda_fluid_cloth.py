"""CUDA kernels == C++ CPU kernels == PyTorch twins for fluid_loss_grad and cloth_loss_grad.

Marked ``cuda``: skipped (with the reason) unless torch sees a GPU and metaphys._C was built with
the CUDA kernels. Run with ``pytest -m cuda tests/test_cuda_fluid_cloth.py`` or, without pytest,
``python tests/test_cuda_fluid_cloth.py``. The CUDA bindings fill their outputs with NaN before
the launch, so any element a kernel fails to write shows up as a non-finite value here.
"""
from __future__ import annotations

import os
import sys
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from metaphys import _ops  # noqa: E402
from metaphys.physics import cloth as C  # noqa: E402
from metaphys.physics import fluid as F  # noqa: E402
from test_physics_cloth import random_args as cloth_args  # noqa: E402
from test_physics_fluid import random_args as fluid_args  # noqa: E402

try:
    import pytest
except ImportError:
    pytest = None

# nvcc contracts multiply-adds into FMAs, the CPU build does not: a few ulps apart
REL = 1e-12
SIZES = [(1, 7, 9), (3, 16, 23), (2, 31, 17), (2, 3, 4), (1, 67, 130)]
OPS = {"fluid_loss_grad": (fluid_args, F.fluid_twin, 3), "cloth_loss_grad": (cloth_args, C.cloth_twin, 2)}


def skip_reason():
    if not torch.cuda.is_available():
        return "torch.cuda is not available (no GPU or a CPU-only torch)"
    if not _ops.kernels_available():
        return "metaphys._C is not built (run `make build`)"
    if not _ops.cuda_kernels_available():
        return "metaphys._C was built without the CUDA kernels (needs a CUDA torch and CUDA_HOME at build time)"
    return None


def assert_close_rel(got, want, rel=REL, what=""):
    assert got.shape == want.shape and got.dtype == want.dtype, what
    assert bool(torch.isfinite(got).all()), f"{what}: non-finite values in the result"
    got, want = got.cpu(), want.cpu()
    scale = float(want.abs().max()) if want.numel() else 0.0
    err = float(((got - want).abs() - rel * (want.abs() + scale)).max()) if want.numel() else 0.0
    assert err <= 0.0, f"{what}: max |diff| {float((got - want).abs().max()):.3e} exceeds {rel:g} relative"


def _to(args, device):
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def _op(name):
    return getattr(torch.ops.metaphys, name)


# --- checks (plain functions, so this file also runs without pytest) ----------------------------

def check_cuda_matches_cpu_and_twin(name, size):
    make, twin, _ = OPS[name]
    n, h, w = size
    if name == "cloth_loss_grad" and (h < 2 or w < 2):
        return
    args = make(sum(size) + 11, n, h, w)
    l_cpu, g_cpu = _op(name)(*args)
    cuda_args = _to(args, "cuda")
    l_gpu, g_gpu = _op(name)(*cuda_args)
    assert l_gpu.is_cuda and g_gpu.is_cuda
    assert_close_rel(l_gpu, l_cpu, REL, f"{name} {size} loss (CUDA vs CPU)")
    assert_close_rel(g_gpu, g_cpu, REL, f"{name} {size} grad (CUDA vs CPU)")
    l_tw, g_tw = twin(*cuda_args)
    assert_close_rel(l_gpu, l_tw, REL, f"{name} {size} loss (CUDA vs twin on GPU)")
    assert_close_rel(g_gpu, g_tw, REL, f"{name} {size} grad (CUDA vs twin on GPU)")


def check_large_grid_and_determinism(name):
    """Many blocks and grid-stride loops; bitwise-repeatable results."""
    make, _, _ = OPS[name]
    args = make(99, 3, 515, 1029) if name == "fluid_loss_grad" else make(99, 2, 300, 517)
    l_cpu, g_cpu = _op(name)(*args)
    cuda_args = _to(args, "cuda")
    l1, g1 = _op(name)(*cuda_args)
    l2, g2 = _op(name)(*cuda_args)
    assert torch.equal(l1, l2) and torch.equal(g1, g2), "CUDA results differ between two identical calls"
    assert_close_rel(l1, l_cpu, REL, f"{name} large loss")
    assert_close_rel(g1, g_cpu, REL, f"{name} large grad")


def check_problem_dispatches_to_cuda(name):
    if name == "fluid_loss_grad":
        u, a_old, mask, bc, force, rho, mu, dt, *_ = fluid_args(5, 2, 20, 24)
        prob = F.FluidProblem(mask, bc, a_old=a_old, force=force, rho=rho, mu=mu, dt=dt)
    else:
        u, x, v, pw, px, sph, box, grav, wind, *p = cloth_args(5, 2, 20, 24)
        prob = C.ClothProblem(x, v_old=v, pin_w=pw, pin_x=px, spheres=sph, boxes=box, gravity=grav, wind=wind,
                              **dict(zip(C.PARAM_NAMES, p)))
    old = _ops.backend()
    try:
        _ops.set_backend("kernel")
        assert _ops.use_kernel(name, u.cuda())
        l_gpu, g_gpu = prob.to("cuda").loss_and_grad(u.cuda())
        l_cpu, g_cpu = prob.loss_and_grad(u)
    finally:
        _ops.set_backend(old)
    assert_close_rel(l_gpu, l_cpu, REL, f"{name} problem loss")
    assert_close_rel(g_gpu, g_cpu, REL, f"{name} problem grad")


def check_cuda_rejects_bad_input(name):
    make, _, other = OPS[name]
    args = list(_to(make(3, 2, 6, 7), "cuda"))
    label = "force" if name == "fluid_loss_grad" else "pin_w"
    cases = []
    a = list(args)
    a[other + 1] = a[other + 1].cpu()
    cases.append((a, f"{label} is on cpu but the unknown is on cuda"))
    a = list(args)
    a[0] = a[0].float()
    cases.append((a, "must be float64"))
    for bad, msg in cases:
        try:
            _op(name)(*bad)
        except RuntimeError as exc:
            assert msg in str(exc), f"expected {msg!r} in {str(exc)!r}"
        else:
            raise AssertionError(f"{name}: no error for bad input (expected {msg!r})")


def check_opcheck_cuda(name):
    make, _, _ = OPS[name]
    args = _to(make(4, 2, 6, 7), "cuda")
    u = args[0].clone().requires_grad_(True)
    torch.library.opcheck(_op(name).default, (u,) + args[1:],
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


CASES = [(name, size) for name in OPS for size in SIZES]


def _case_id(case):
    name, (n, h, w) = case
    return f"{name.replace('_loss_grad', '')}-{n}x{h}x{w}"


if pytest is not None:
    _reason = skip_reason()
    pytestmark = [pytest.mark.cuda, pytest.mark.skipif(_reason is not None, reason=_reason or "")]

    @pytest.mark.parametrize("case", CASES, ids=_case_id)
    def test_cuda_matches_cpu_and_twin(case):
        check_cuda_matches_cpu_and_twin(*case)

    @pytest.mark.parametrize("name", list(OPS))
    def test_large_grid_and_determinism(name):
        check_large_grid_and_determinism(name)

    @pytest.mark.parametrize("name", list(OPS))
    def test_problem_dispatches_to_cuda(name):
        check_problem_dispatches_to_cuda(name)

    @pytest.mark.parametrize("name", list(OPS))
    def test_cuda_rejects_bad_input(name):
        check_cuda_rejects_bad_input(name)

    @pytest.mark.parametrize("name", list(OPS))
    def test_opcheck_cuda(name):
        check_opcheck_cuda(name)


def main() -> int:
    """Runner for machines without pytest: every check, one line each, exit status 1 on failure."""
    reason = skip_reason()
    if reason:
        print(f"SKIPPED: {reason}")
        return 0
    checks = [(f"cuda_matches_cpu_and_twin[{_case_id(c)}]", check_cuda_matches_cpu_and_twin, c) for c in CASES]
    for name in OPS:
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
