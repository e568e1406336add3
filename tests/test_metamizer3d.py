"""The 3-D Metamizer (issue #28 item 2): the scale-invariant contract on [N, C, D, H, W] fields, `solve`
with the subspace acceleration and the step guard unchanged, TorchScript weights in their own file
(checksummed, loaded without unpickling), the 3-D problem generators and the dims: 3 training recipe
(finite steps, bit-exact resume, the committed run directory resumes)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from metaphys import problems
from metaphys.eval import cases
from metaphys.optim.metamizer import Metamizer, MetamizerNet
from metaphys.optim.solve import solve
from metaphys.physics import Fluid3DProblem, Laplace3DProblem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY3D = os.path.join(ROOT, "configs", "tiny3d.yaml")
CPU3D = os.path.join(ROOT, "configs", "cpu3d.yaml")
WEIGHTS3D = os.path.join(ROOT, "weights", "metamizer3d.pt")
F64 = torch.float64


def _net(hidden=4, seed=0):
    torch.manual_seed(seed)
    return MetamizerNet(hidden=hidden, dims=3).eval()


def _inputs(n=2, size=(16, 16, 16), seed=1):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(n, 1, *size, generator=g, dtype=F64)
    prev_grad = torch.randn(n, 1, *size, generator=g, dtype=F64)
    prev_step = 0.01 * torch.randn(n, 1, *size, generator=g, dtype=F64)
    scale = torch.tensor([0.05, 0.3][:n], dtype=F64)
    return grad, prev_grad, prev_step, scale


def test_the_3d_network_is_the_2d_design_one_dimension_up():
    net3, net2 = MetamizerNet(hidden=8, dims=3), MetamizerNet(hidden=8)
    assert net3.dims == 3 and net2.dims == 2
    assert list(net3.state_dict()) == list(net2.state_dict())       # same modules, same names
    convs = [m for m in net3.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 19 and not any(isinstance(m, torch.nn.Conv2d) for m in net3.modules())
    assert sum(p.numel() for p in net3.parameters()) == 811082   # configs/cpu3d.yaml's network
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        MetamizerNet(dims=4)


def test_step_is_invariant_to_the_loss_scale_and_equivariant_to_the_units():
    net = _net()
    grad, prev_grad, prev_step, scale = _inputs()
    with torch.no_grad():
        step, new_scale = net(grad, prev_grad, prev_step, scale)
        assert step.shape == grad.shape and new_scale.shape == (2,)
        assert bool((step.abs() < new_scale.view(-1, 1, 1, 1, 1)).all())   # |step| < s everywhere
        # loss x 1000: gradients x 1000, the step is the same
        s2, n2 = net(1000.0 * grad, 1000.0 * prev_grad, prev_step, scale)
        assert torch.allclose(s2, step, rtol=1e-5, atol=1e-7 * float(step.abs().max()))
        assert torch.allclose(n2, new_scale, rtol=1e-6)
        # the unknown in other units (x 1e-3): previous step and scale scale, and so does the step
        s3, n3 = net(grad, prev_grad, 1e-3 * prev_step, 1e-3 * scale)
        assert torch.allclose(s3, 1e-3 * step, rtol=1e-5, atol=1e-10 * float(step.abs().max()))
        assert torch.allclose(n3, 1e-3 * new_scale, rtol=1e-12)
        # and a different gradient gives a different step (the test can fail)
        s4, _ = net(grad.flip(2), prev_grad, prev_step, scale)
        assert not torch.allclose(s4, step, rtol=1e-3)


def test_samples_and_channels_are_independent_and_permute():
    """In eval mode a sample's step depends on its own fields only: permuting the batch (or the channels
    of a multi-channel unknown, split into single-channel samples) permutes the steps."""
    opt = Metamizer(_net())
    g = torch.randn(2, 4, 16, 17, 18, generator=torch.Generator().manual_seed(3), dtype=F64)
    state = opt.init_state(tuple(g.shape))
    assert state.prev_grad.shape == (8, 1, 16, 17, 18) and state.scale.shape == (8,)
    step, new_state = opt.step(g, state)
    assert step.shape == g.shape and new_state.prev_step.shape == (8, 1, 16, 17, 18)
    perm = torch.tensor([1, 0])
    step_p, _ = opt.step(g[perm], opt.init_state(tuple(g.shape)))
    assert torch.allclose(step_p, step[perm], rtol=1e-6, atol=1e-12)
    cperm = torch.tensor([2, 0, 3, 1])
    step_c, _ = opt.step(g[:, cperm], opt.init_state(tuple(g.shape)))
    assert torch.allclose(step_c, step[:, cperm], rtol=1e-6, atol=1e-12)
    # shrink scales a sample's scale and previous step on all its channels
    scale, prev = new_state.scale.clone(), new_state.prev_step.clone()
    opt.shrink(new_state, torch.tensor([0.5, 1.0], dtype=F64))
    assert torch.equal(new_state.scale[:4], 0.5 * scale[:4]) and torch.equal(new_state.scale[4:], scale[4:])
    assert torch.equal(new_state.prev_step[:4], 0.5 * prev[:4]) and torch.equal(new_state.prev_step[4:], prev[4:])


def test_solve_reduces_a_3d_laplace_residual_with_acceleration_and_guard():
    problem = problems.get("laplace3d")(2, 16, 16, torch.Generator().manual_seed(11))
    opt = Metamizer(_net())
    res = solve(problem, opt, iterations=30, guard=True)            # acceleration on (memory 20)
    start, end = res.residuals[0], res.residual
    assert res.iterations == 30 and torch.isfinite(res.u).all()
    # an untrained network shrinks its scale by e each iteration (o_s ~ 0): it moves a little, and the
    # accelerated iteration ends no higher than the plain one (trained weights: the shipped-weights test)
    assert bool((end < start).all()), (start, end)
    plain = solve(problem, Metamizer(_net()), iterations=30, guard=True, accelerate=0)
    assert bool((end <= plain.residual).all())
    # Dirichlet nodes keep their values
    m = problem.fields["mask"]
    assert torch.equal(res.u * m, problem.fields["bc"] * m)


def test_solve_runs_a_3d_fluid_step_with_the_guard():
    problem = problems.get("fluid3d")(1, 16, 16, torch.Generator().manual_seed(2))
    assert isinstance(problem, Fluid3DProblem) and problem.shape == (1, 4, 16, 16, 16)
    res = solve(problem, Metamizer(_net()), iterations=6, guard=True)
    assert torch.isfinite(res.u).all() and float(res.residual) <= float(res.residuals[0])


def test_torchscript_round_trip_of_3d_weights(tmp_path):
    from metaphys.optim.weights import (WeightsError, export_torchscript, load_state_dict_any, load_torchscript,
                                        script_model)
    net = _net(hidden=4, seed=5)
    path = str(tmp_path / "metamizer3d.pt")
    meta = export_torchscript(net, path, {"note": "test"})
    card = json.load(open(path[:-3] + ".json"))
    assert card["dims"] == 3 and "[N,1,D,H,W]" in card["contract"] and card["sha256"] == meta["sha256"]
    loaded = load_torchscript(path)
    assert int(loaded.dims) == 3
    args = _inputs()
    with torch.no_grad():
        a = loaded(*args)
        b = script_model(net)(*args)
        c = net(*args)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])      # the file gives identical steps
    assert torch.allclose(a[0], c[0], rtol=1e-4, atol=1e-6 * float(c[0].abs().max()))  # BatchNorm folded
    opt = Metamizer(path)
    assert opt.dims == 3
    with pytest.raises(ValueError, match="network is 3-D"):
        opt.init_state((1, 1, 16, 16))
    # the unfolded state dict loads into a fresh 3-D network (no unpickling: TorchScript is read by torch.jit)
    fresh = MetamizerNet(hidden=4, dims=3)
    fresh.load_state_dict(load_state_dict_any(path))
    # a replaced file fails its checksum
    with open(path, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(WeightsError, match="checksum"):
        load_torchscript(path)


def test_a_3d_snapshot_loads_as_plain_data_and_refuses_objects(tmp_path):
    import pickle
    from metaphys.optim.weights import WeightsError, model_from_snapshot
    net = _net(hidden=2)
    good = tmp_path / "ema.pt"
    torch.save({"ema": net.state_dict(), "step": 3, "hidden": 2, "padding_mode": "zeros", "dims": 3}, good)
    model = model_from_snapshot(str(good))
    assert model.dims == 3
    args = _inputs()
    with torch.no_grad():
        assert torch.equal(model(*args)[0], net(*args)[0])
    bad = tmp_path / "evil.pt"
    torch.save({"ema": net.state_dict(), "payload": pickle.loads(pickle.dumps(Exception("x")))}, bad)
    with pytest.raises(WeightsError, match="refusing"):
        model_from_snapshot(str(bad))


def test_3d_generators_and_eval_cases():
    for name, cls, channels in (("laplace3d", Laplace3DProblem, 1), ("fluid3d", Fluid3DProblem, 4)):
        make = problems.get(name)
        assert problems.dims_of(make) == 3
        p = make(3, 16, 20, torch.Generator().manual_seed(4), depth=18)
        assert isinstance(p, cls) and p.shape == (3, channels, 18, 16, 20)
        loss, grad = p.loss_and_grad(p.initial_guess())
        assert torch.isfinite(loss).all() and bool((loss > 0).all())
        again = make(3, 16, 20, torch.Generator().manual_seed(4), depth=18)
        assert all(torch.equal(p.fields[k], again.fields[k]) for k in p.fields)   # seeded
    lap = problems.get("laplace3d")(4, 24, 24, torch.Generator().manual_seed(1))
    inner = lap.fields["mask"][..., 2:-2, 2:-2, 2:-2]
    assert float(inner.sum()) > 0                                   # random obstacles inside the frame
    for builder in ("laplace3d_random", "laplace3d_trilinear", "poisson3d_charges"):
        p = getattr(cases, builder)(16)
        assert p.shape[-3:] == (16, 16, 16) and float(p.residual(p.initial_guess()).max()) > 0


def _params(tr):
    return torch.cat([p.detach().flatten() for p in tr.model.parameters()])


def test_tiny_3d_training_runs_and_resumes_bit_exactly(tmp_path):
    from metaphys.train.config import TrainConfig
    from metaphys.train.loop import Trainer
    cfg = TrainConfig.load(TINY3D)
    assert cfg.dims == 3
    straight = Trainer(cfg, str(tmp_path / "a"))
    assert straight.model.dims == 3
    before = _params(straight).clone()
    for _ in range(4):
        losses = straight.train_step()
        assert set(losses) == {"laplace3d16x16x16_ipt1", "fluid3d16x16x16_ipt2"}
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert not torch.equal(before, _params(straight))
    first = Trainer(cfg, str(tmp_path / "b"))
    for _ in range(2):
        first.train_step()
    first.save_checkpoint()
    resumed = Trainer(cfg, str(tmp_path / "b"))
    assert resumed.load_checkpoint() and resumed.step == 2
    for _ in range(2):
        resumed.train_step()
    assert torch.equal(_params(straight), _params(resumed))
    for p, q in zip(straight.pools, resumed.pools):
        assert torch.equal(p.u, q.u) and torch.equal(p.state.scale, q.state.scale)
    snap = resumed.save_snapshot()
    from metaphys.optim.weights import model_from_snapshot
    assert model_from_snapshot(snap).dims == 3


def test_recipes_refuse_pools_of_the_other_dimension():
    from metaphys.train.config import TrainConfig
    cfg = TrainConfig.load(CPU3D)
    assert cfg.dims == 3 and {p.pde for p in cfg.pools} == {"laplace3d", "fluid3d"}
    with pytest.raises(ValueError, match="makes 3-D problems"):
        TrainConfig.from_dict({"pools": [{"pde": "laplace"}, {"pde": "fluid3d"}]})
    with pytest.raises(ValueError, match="makes 2-D problems"):
        TrainConfig.from_dict({"dims": 3, "pools": [{"pde": "laplace"}]})
    # the 2-D recipes hold no 3-D pool (fluid3d and laplace3d stay out of the 2-D network's training)
    for name in ("cpu.yaml", "cpu_sizes.yaml", "gpu.yaml", "tiny.yaml"):
        assert TrainConfig.load(os.path.join(ROOT, "configs", name)).dims == 2


def test_the_committed_3d_checkpoint_resumes_on_a_fresh_machine(tmp_path):
    from metaphys.train.config import TrainConfig
    from metaphys.train.loop import Trainer
    src = os.path.join(ROOT, "training", "cpu3d", "checkpoint.pt")
    assert os.path.exists(src), "training/cpu3d/checkpoint.pt is committed (issue #28 item 2)"
    shutil.copy(src, tmp_path / "checkpoint.pt")  # no pools.pt: a fresh clone
    cfg = TrainConfig.load(CPU3D)
    for spec in cfg.pools:  # the committed recipe, shrunk so the test stays fast
        spec.pool, spec.batch, spec.size = 2, 1, 16
    trainer = Trainer(cfg, str(tmp_path))
    assert trainer.load_checkpoint()
    saved = torch.load(src, map_location="cpu", weights_only=True)
    assert trainer.step == saved["step"] > 0 and saved["config"]["dims"] == 3
    for k, v in saved["ema"].items():
        assert torch.equal(trainer.ema.state_dict()[k], v)
    trainer.train_step()
    assert trainer.step == saved["step"] + 1


def test_the_shipped_3d_weights_load_and_solve():
    """weights/metamizer3d.pt (exported from training/cpu3d): checksummed, 3-D, and on a held-out 3-D
    Laplace problem its plain iteration lowers the residual (the young network; benchmarks/results/
    metamizer3d_eval.md has the numbers)."""
    from metaphys.optim.weights import load_metadata, load_torchscript
    assert os.path.exists(WEIGHTS3D), "weights/metamizer3d.pt is committed (issue #28 item 2)"
    card = load_metadata(WEIGHTS3D)
    assert card["dims"] == 3 and card["architecture"] == "unet4-trilinear-3d"
    opt = Metamizer(load_torchscript(WEIGHTS3D))
    problem = cases.laplace3d_random(16, n=1)
    res = solve(problem, opt, iterations=40, accelerate=0)
    assert float(res.residual) < 0.5 * float(res.residuals[0])
    fast = solve(problem, opt, iterations=40, guard=True)
    assert float(fast.residual) < 1e-3 * float(fast.residuals[0])
    # solve() without an optimizer takes the network of the problem's dimension (on CPU its fast
    # module, optim/fast.py: the same steps to float32 round-off)
    default = solve(problem, iterations=5, accelerate=0)
    plain = solve(problem, opt, iterations=5, accelerate=0).u
    moved = float((plain - problem.initial_guess()).abs().max())
    assert moved > 0 and float((default.u - plain).abs().max()) < 1e-5 * moved


def test_the_3d_eval_benchmark_runs_in_quick_mode(tmp_path):
    """benchmarks/metamizer3d_eval.py end to end on an untrained exported 3-D network (tiny sizes)."""
    import importlib.util
    from metaphys.optim.weights import export_torchscript
    spec = importlib.util.spec_from_file_location("metamizer3d_eval", os.path.join(ROOT, "benchmarks",
                                                                                  "metamizer3d_eval.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = str(tmp_path / "w3d.pt")
    export_torchscript(_net(hidden=2), path)
    out = str(tmp_path / "eval.md")
    assert bench.main(["--weights", path, "--quick", "--out", out]) == 0
    text = open(out).read()
    assert "| CG, scipy (sample 0) |" in text and "network, accelerated" in text
    # CG on its own system converges (the matrix is the op's: a wrong stencil would stall it)
    problem = cases.laplace3d_random(16, n=1)
    hist = bench.cg_history(problem, 0, 200)
    assert hist[-1] < 1e-20 * hist[0]
    A, rhs, free = bench.stencil_matrix(problem, 0)
    u = problem.initial_guess().clone()
    x = torch.randn(len(free), dtype=F64, generator=torch.Generator().manual_seed(0))
    u.view(-1)[torch.as_tensor(free)] = x
    r = rhs - A @ x.numpy()
    assert float(problem.residual(u)) == pytest.approx(float(r @ r) / len(free), rel=1e-10)


def test_the_3d_recipe_trains_the_function_it_ships(tmp_path):
    """configs/cpu3d.yaml freezes the BatchNorm statistics: the network in training mode is the same
    function as in eval mode (what is exported), and a sample's step does not depend on its batch."""
    from metaphys.train.config import TrainConfig
    from metaphys.train.loop import Trainer
    cfg = TrainConfig.load(CPU3D)
    assert cfg.freeze_batchnorm
    for spec in cfg.pools:
        spec.pool, spec.batch, spec.size = 2, 1, 16
    tr = Trainer(cfg, str(tmp_path))
    tr.train_step()                      # the weights move; the statistics must not
    bn = [m for m in tr.model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bn and all(float(m.running_mean.abs().max()) == 0.0 and bool((m.running_var == 1).all()) for m in bn)
    args = _inputs()
    tr._train_mode()
    with torch.no_grad():
        a = tr.model(*args)
        b = tr.model(*(x[:1] for x in args))
    tr.model.eval()
    with torch.no_grad():
        c = tr.model(*args)
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    assert torch.allclose(b[0], a[0][:1], rtol=1e-6, atol=1e-12)
