"""metaphys.optim.fast: the frozen inference module gives the plain module's steps (to 1e-6)."""
import pytest
import torch

from metaphys.optim.fast import FastMetamizer, FastMetamizerNet, eager_from_any, native_bf16, optimize_for_inference
from metaphys.optim.metamizer import Metamizer, MetamizerNet
from metaphys.optim.solve import solve
from metaphys.optim.weights import export_torchscript, load_torchscript
from metaphys.physics import LaplaceProblem, frame_mask
from metaphys.problems.grid import make_laplace

TOL = 1e-6


def _net(seed=0, hidden=6):
    torch.manual_seed(seed)
    net = MetamizerNet(hidden=hidden)
    net.train()  # non-trivial BatchNorm statistics, folded by export / optimize_for_inference
    with torch.no_grad():
        for _ in range(3):
            g = torch.randn(4, 1, 24, 24, dtype=torch.float64)
            net(g, g, g, torch.full((4,), 0.05, dtype=torch.float64))
    return net.eval()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    net = _net()
    path = str(tmp_path_factory.mktemp("w") / "metamizer.pt")
    export_torchscript(net, path, {"training": {"steps": 0}})
    return net, load_torchscript(path)


def _inputs(shape, seed=1, tiny=False):
    g = torch.Generator().manual_seed(seed)
    k = 1e-30 if tiny else 1.0
    grad = k * torch.randn(shape, generator=g, dtype=torch.float64)
    prev_grad = 0.3 * k * torch.randn(shape, generator=g, dtype=torch.float64)
    prev_step = 1e-3 * torch.randn(shape, generator=g, dtype=torch.float64)
    scale = torch.rand(shape[0], generator=g, dtype=torch.float64) * 0.1 + 1e-4
    return grad, prev_grad, prev_step, scale


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.fixture(scope="module")
def variants(shipped):
    _, plain = shipped
    kws = {"default": {}, "mkldnn": {"mkldnn": True}, "nchw": {"channels_last": False}}
    return {k: optimize_for_inference(plain, **kw) for k, kw in kws.items()}


@pytest.mark.parametrize("variant", ["default", "mkldnn", "nchw"])
def test_same_steps_as_plain_module(shipped, variants, variant):
    _, plain = shipped
    fast = variants[variant]
    for seed, shape in enumerate([(1, 1, 16, 16), (3, 1, 24, 20), (2, 1, 37, 45), (1, 1, 64, 64)]):
        args = _inputs(shape, seed=seed)
        with torch.no_grad():
            s0, c0 = plain(*args)
            s1, c1 = fast(*args)
            s2, _ = fast(*args)  # repeated calls (TorchScript profiling runs) give the same result
        assert s1.dtype == torch.float64 and c1.dtype == torch.float64
        assert s1.shape == s0.shape and c1.shape == c0.shape
        assert _rel(s1, s0) < TOL, shape
        assert _rel(c1, c0) < TOL, shape
        assert _rel(s2, s1) < TOL


def test_from_eager_net_and_fresh_state(shipped):
    net, plain = shipped
    fast = optimize_for_inference(net)  # an eager MetamizerNet with BatchNorm, folded inside
    shape = (2, 1, 32, 32)
    g = _inputs(shape)[0]
    zeros = torch.zeros(shape, dtype=torch.float64)
    scale = torch.full((2,), 0.05, dtype=torch.float64)
    with torch.no_grad():
        s0, c0 = net(g, zeros, zeros, scale)
        s1, c1 = fast(g, zeros, zeros, scale)
    assert _rel(s1, s0) < TOL and _rel(c1, c0) < TOL


def test_tiny_gradients_do_not_underflow(shipped, variants):
    """Gradients near 1e-30 (converged float64 physics) normalize exactly as in float64."""
    _, plain = shipped
    fast = variants["default"]
    args = _inputs((1, 1, 32, 32), tiny=True)
    with torch.no_grad():
        s0, _ = plain(*args)
        s1, _ = fast(*args)
    assert torch.isfinite(s1).all()
    assert _rel(s1, s0) < TOL


def test_solve_trajectory_matches(shipped):
    _, plain = shipped
    problem = make_laplace(2, 32, 32, torch.Generator().manual_seed(5))
    # the plain iteration: the subspace acceleration would amplify float32 summation-order noise
    a = solve(problem, Metamizer(plain), iterations=15, accelerate=0)
    b = solve(problem, FastMetamizer(plain), iterations=15, accelerate=0)
    ha, hb = a.history(), b.history()
    assert ha.shape == hb.shape
    # the same optimizer up to float32 summation order: residuals agree closely over 15 steps
    rel = ((hb - ha).abs() / ha.abs().clamp_min(1e-300)).max()
    assert float(rel) < 1e-3
    assert _rel(b.u, a.u) < 1e-5


def test_idempotent_and_errors(shipped, variants):
    _, plain = shipped
    fast = variants["default"]
    with pytest.raises(TypeError):
        eager_from_any(object())
    with pytest.raises(ValueError):
        optimize_for_inference(plain, dtype=torch.float16)
    assert isinstance(eager_from_any(plain), MetamizerNet)
    assert isinstance(FastMetamizerNet(eager_from_any(plain).unet), torch.nn.Module)
    # the frozen module has no weights left to rebuild from; passing it back returns it
    if getattr(fast, "_metaphys_fast", False):
        assert optimize_for_inference(fast) is fast


def test_bf16_is_opt_in_and_close(shipped):
    _, plain = shipped
    fast = optimize_for_inference(plain, dtype=torch.bfloat16)
    args = _inputs((1, 1, 32, 32))
    with torch.no_grad():
        s0, c0 = plain(*args)
        s1, c1 = fast(*args)
    assert s1.dtype == torch.float64
    assert _rel(s1, s0) < 0.1  # bf16 network: ~1e-2, not the float32 steps
    assert _rel(c1, c0) < 0.05


@pytest.mark.skipif(not native_bf16(), reason="no native bf16 on this CPU")
def test_bf16_converges_on_laplace(shipped):
    """A random (untrained) net does not converge; check the bf16 run tracks the float32 run."""
    _, plain = shipped
    problem = LaplaceProblem(frame_mask(1, 32, 32), torch.ones(1, 1, 32, 32, dtype=torch.float64))
    a = solve(problem, Metamizer(plain), iterations=10, accelerate=0).history()
    b = solve(problem, FastMetamizer(plain, dtype=torch.bfloat16), iterations=10, accelerate=0).history()
    assert torch.isfinite(b).all()
    assert float(b[-1, 0]) < 10 * float(a[-1, 0]) + 1e-30
