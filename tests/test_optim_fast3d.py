"""metaphys.optim.fast for the 3-D network (issue #28): the frozen, channels_last_3d, oneDNN, packed
module gives the plain module's steps (float32 round-off), keeps its dimension, refuses other fields,
and is what SmokeSim3D and solve() run by default on CPU."""
import pytest
import torch

from metaphys.optim.fast import (FastMetamizer, OneDNNConv, optimize_for_inference, pack_factor,
                                 shipped_fast_module)
from metaphys.optim.metamizer import Metamizer, MetamizerNet
from metaphys.optim.solve import TimeStepper, solve
from metaphys.optim.weights import export_torchscript, load_torchscript
from metaphys.optim.weights_file import DEFAULT_WEIGHTS_3D
from metaphys.problems.grid3d import make_laplace3d

F64 = torch.float64
TOL = 1e-5   # float32 round-off of a different summation order, relative to the largest step


def _net(seed=0, hidden=4):
    torch.manual_seed(seed)
    net = MetamizerNet(hidden=hidden, dims=3)
    net.train()  # non-trivial BatchNorm statistics, folded by export / optimize_for_inference
    with torch.no_grad():
        for _ in range(2):
            g = torch.randn(2, 1, 16, 16, 16, dtype=F64)
            net(g, g, g, torch.full((2,), 0.05, dtype=F64))
    return net.eval()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("w3") / "metamizer3d.pt")
    export_torchscript(_net(), path, {"training": {"steps": 0}})
    return load_torchscript(path)


@pytest.fixture(scope="module")
def shipped():
    return load_torchscript(DEFAULT_WEIGHTS_3D)


def _inputs(shape, seed=1, k=1.0):
    g = torch.Generator().manual_seed(seed)
    grad = k * torch.randn(shape, generator=g, dtype=F64)
    prev_grad = 0.3 * k * torch.randn(shape, generator=g, dtype=F64)
    prev_step = 1e-3 * torch.randn(shape, generator=g, dtype=F64)
    scale = torch.rand(shape[0], generator=g, dtype=F64) * 0.1 + 1e-4
    return grad, prev_grad, prev_step, scale


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# grids: power of two (no pad), odd and uneven sizes (pad at the upsampling, the packed conv's
# fallback for an odd width), a batch of the smoke sim's four channels
SHAPES = [(1, 1, 16, 16, 16), (2, 1, 17, 20, 19), (4, 1, 16, 24, 32), (1, 1, 32, 32, 32)]
VARIANTS = {"default": {}, "no pack": {"pack": False}, "no oneDNN": {"onednn": False},
            "packed everywhere": {"onednn": True, "pack": True}, "NCDHW": {"channels_last": False},
            "not lean": {"lean": False}, "mkldnn": {"mkldnn": True}}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_steps_as_plain_module(plain, variant):
    fast = optimize_for_inference(plain, **VARIANTS[variant])
    assert fast.dims == 3
    for seed, shape in enumerate(SHAPES):
        args = _inputs(shape, seed=seed)
        with torch.no_grad():
            s0, c0 = plain(*args)
            s1, c1 = fast(*args)
            s2, _ = fast(*args)  # repeated calls (TorchScript's profiling runs) give the same result
        assert s1.dtype == F64 and c1.dtype == F64
        assert s1.shape == s0.shape == shape and c1.shape == c0.shape == (shape[0],)
        assert s1.is_contiguous()
        assert _rel(s1, s0) < TOL, (variant, shape, _rel(s1, s0))
        assert _rel(c1, c0) < TOL, (variant, shape)
        assert _rel(s2, s1) < TOL


def test_shipped_weights_same_steps_and_tiny_gradients(shipped):
    fast = optimize_for_inference(shipped)
    for k in (1.0, 1e-30):   # gradients of 1e-30 do not underflow in the fused normalization
        args = _inputs((4, 1, 16, 16, 16), seed=3, k=k)
        with torch.no_grad():
            s0, c0 = shipped(*args)
            s1, c1 = fast(*args)
        assert bool(torch.isfinite(s1).all()) and float(s1.abs().max()) > 0
        assert _rel(s1, s0) < TOL and _rel(c1, c0) < TOL


@pytest.mark.parametrize("pack", [1, 2, 4])
@pytest.mark.parametrize("dims", [2, 3])
def test_packed_onednn_conv_equals_the_conv(pack, dims):
    """k x positions as output channels: the same values as the conv (any CPU: the factor is forced
    here), and the plain kernel where k does not divide the width."""
    torch.manual_seed(pack + dims)
    conv = (torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d)(6, 8, 3, padding=1).eval()
    fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
    layer = OneDNNConv(conv, pack)
    for width in (16, 12, 9):
        x = torch.randn((2, 6) + (10,) * (dims - 1) + (width,))
        with torch.no_grad():
            ref = conv(x)
            for xin in (x, x.contiguous(memory_format=fmt)):
                out = layer(xin)
                assert out.shape == ref.shape
                assert float((out - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def test_pack_factor_rule():
    cap = torch.backends.cpu.get_cpu_capability()
    wide = cap in ("AVX512", "AMX")
    assert pack_factor(8) == (2 if wide else 1)
    assert pack_factor(4) == (4 if wide else 1)
    assert pack_factor(16) == 1 and pack_factor(12) == 1 and pack_factor(64) == 1 and pack_factor(1) == 1


def test_refuses_fields_of_another_shape(plain):
    # inside the frozen module a ValueError surfaces as torch.jit.Error (its message kept)
    fast = optimize_for_inference(plain)
    g2 = torch.zeros(1, 1, 16, 16, dtype=F64)
    sc = torch.full((1,), 0.05, dtype=F64)
    with pytest.raises(torch.jit.Error, match=r"3-D network \[N, 1, D, H, W\]"):
        fast(g2, g2, g2, sc)
    g3 = torch.zeros(1, 2, 16, 16, 16, dtype=F64)
    with pytest.raises(torch.jit.Error, match="does not fit this network"):
        fast(g3, g3, g3, sc)
    g = torch.zeros(1, 1, 16, 16, 16, dtype=F64)
    with pytest.raises(torch.jit.Error, match="one shape"):
        fast(g, torch.zeros(1, 1, 16, 16, 17, dtype=F64), g, sc)
    with pytest.raises(torch.jit.Error, match="one shape"):
        fast(g, g, g, torch.full((2,), 0.05, dtype=F64))
    with pytest.raises(ValueError, match="3-D but the unknown"):
        FastMetamizer(plain).init_state((1, 1, 16, 16))
    with pytest.raises(ValueError, match="dtype must be"):
        optimize_for_inference(plain, dtype=torch.float16)


def test_fast_metamizer_keeps_the_dimension(plain):
    opt = FastMetamizer(plain)
    assert opt.dims == 3 and Metamizer(opt.model).dims == 3
    assert optimize_for_inference(opt.model) is opt.model   # already fast: returned as is
    shipped = FastMetamizer(dims=3)
    assert shipped.dims == 3 and shipped.name == "metamizer-fast"
    assert shipped_fast_module(3) is shipped_fast_module(3)   # built once per process


def test_bf16_is_opt_in_and_close(plain):
    fast = optimize_for_inference(plain, dtype=torch.bfloat16)
    args = _inputs((1, 1, 16, 16, 16))
    with torch.no_grad():
        s0, c0 = plain(*args)
        s1, c1 = fast(*args)
    assert s1.dtype == F64 and s1.shape == s0.shape
    assert 0 < _rel(s1, s0) < 0.1   # bf16 network: ~1e-2, not the float32 steps
    assert _rel(c1, c0) < 0.05


def test_solve_trajectory_matches(shipped):
    problem = make_laplace3d(1, 16, 16, torch.Generator().manual_seed(5), depth=16)
    a = solve(problem, Metamizer(shipped), iterations=12, accelerate=0)
    b = solve(problem, FastMetamizer(shipped), iterations=12, accelerate=0)
    ha, hb = a.history(), b.history()
    assert ha.shape == hb.shape
    assert float(((hb - ha).abs() / ha.abs().clamp_min(1e-300)).max()) < 1e-3
    assert _rel(b.u, a.u) < 1e-5


def test_solve_and_time_stepper_default_to_the_fast_3d_module():
    problem = make_laplace3d(1, 16, 16, torch.Generator().manual_seed(6), depth=16)
    res = solve(problem, iterations=3)
    ref = solve(problem, Metamizer(dims=3), iterations=3)
    assert _rel(res.u, ref.u) < 1e-4
    stepper = TimeStepper(problem, iterations_per_step=1)
    assert isinstance(stepper.optimizer, FastMetamizer) and stepper.optimizer.dims == 3


def test_smoke3d_runs_the_fast_module_with_the_same_answers():
    from metaphys.sims.smoke3d import SmokeSim3D
    from metaphys.spec.params import smoke_parameters
    fast = SmokeSim3D((16, 16, 16), threads=1)
    plain = SmokeSim3D((16, 16, 16), threads=1, optimizer=Metamizer(dims=3))
    assert isinstance(fast.optimizer, FastMetamizer) and type(plain.optimizer) is Metamizer  # a given one runs as is
    for _ in range(3):
        ra, rb = fast.step(), plain.step()
        assert abs(ra.iterations - rb.iterations) <= 1
    rel = float(abs(fast.density - plain.density).max() / max(abs(plain.density).max(), 1e-300))
    assert rel < 1e-4
    # a bake (from_params) wraps a given plain Metamizer, as the 2-D SmokeSim does
    p = smoke_parameters({"resolution": [16, 16, 16], "frames": 1})
    assert isinstance(SmokeSim3D.from_params(p, optimizer=Metamizer(dims=3)).optimizer, FastMetamizer)
