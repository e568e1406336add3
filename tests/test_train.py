"""Training: a tiny recipe runs, losses are finite, checkpoint/resume is bit-exact."""
import os

import pytest
import torch

from metaphys.train.config import TrainConfig
from metaphys.train.loop import Trainer

TINY = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")


def _params(tr):
    return torch.cat([p.detach().flatten() for p in tr.model.parameters()])


def test_tiny_training_steps_are_finite(tmp_path):
    tr = Trainer(TrainConfig.load(TINY), str(tmp_path))
    before = _params(tr).clone()
    for _ in range(4):
        losses = tr.train_step()
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert not torch.equal(before, _params(tr))


def test_checkpoint_resume_is_exact(tmp_path):
    cfg = TrainConfig.load(TINY)
    straight = Trainer(cfg, str(tmp_path / "a"))
    for _ in range(6):
        straight.train_step()

    first = Trainer(cfg, str(tmp_path / "b"))
    for _ in range(3):
        first.train_step()
    first.save_checkpoint()
    resumed = Trainer(cfg, str(tmp_path / "b"))
    assert resumed.load_checkpoint()
    assert resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    assert torch.equal(_params(straight), _params(resumed))
    for p, q in zip(straight.pools, resumed.pools):
        assert torch.equal(p.u, q.u)


def test_pool_resets_round_robin_with_integer_accumulator(tmp_path):
    cfg = TrainConfig.load(TINY)
    tr = Trainer(cfg, str(tmp_path))
    for _ in range(10):
        tr.train_step()
    lap = tr.pools[0]
    # batch 2 per step, episode 10 -> one scheduled reset every 5 steps
    assert lap.stats["scheduled_resets"] == 2


def test_ddp_on_cpu_with_two_gloo_processes(tmp_path):
    """torchrun with 2 processes: gradients are all-reduced, so both ranks end with equal weights."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "ddp_job.py"
    script.write_text(
        "import os, sys, torch, torch.distributed as dist\n"
        "from metaphys.train.config import TrainConfig\n"
        "from metaphys.train.loop import Trainer\n"
        "dist.init_process_group('gloo')\n"
        f"tr = Trainer(TrainConfig.load({os.path.join(root, 'configs', 'ddp_tiny.yaml')!r}), sys.argv[1])\n"
        "for _ in range(3):\n"
        "    tr.train_step()\n"
        "flat = torch.cat([p.detach().flatten() for p in tr.model.parameters()])\n"
        "torch.save(flat, os.path.join(sys.argv[1], f'rank{dist.get_rank()}.pt'))\n"
        "dist.destroy_process_group()\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                        str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a, b)


def test_product_cloth_pool_uses_the_sims_material_mapping():
    import torch
    from metaphys.sims.cloth import model_material
    from metaphys import problems
    make = problems.get("cloth_product")
    small = make(8, 16, 16, torch.Generator().manual_seed(3))
    large = make(8, 64, 64, torch.Generator().manual_seed(3))
    # same draws, 4x finer grid: the model's stretch stiffness grows ~16x (dt^2 / (rho L0^2))
    ratio = (large.fields["k_stretch"] / small.fields["k_stretch"]).median()
    assert 10 < float(ratio) < 25
    lo = model_material({"tension": 50.0, "shear": 1.0, "bending": 1e-6, "mass_per_area": 0.5, "air_damping": 0},
                        16, 16, 1 / 15, 1 / 60)["k_stretch"]
    assert float(small.fields["k_stretch"].min()) >= 0.99 * lo
    loss, grad = small.loss_and_grad(small.initial_guess())
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("run, recipe", [("cpu", "cpu.yaml"), ("cpu_sizes", "cpu_sizes.yaml")])
def test_the_committed_training_checkpoint_resumes_on_a_fresh_machine(tmp_path, run, recipe):
    """training/<run>/checkpoint.pt (committed, without the local pools.pt) continues: network, EMA
    and optimizer come back, pools start fresh, and a training step runs."""
    import os
    import shutil
    import torch
    from metaphys.train.config import TrainConfig
    from metaphys.train.loop import Trainer
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "training", run, "checkpoint.pt")
    shutil.copy(src, tmp_path / "checkpoint.pt")  # no pools.pt: a fresh clone
    cfg = TrainConfig.load(os.path.join(root, "configs", recipe))
    for spec in cfg.pools:  # the committed recipe, shrunk so the test stays fast
        spec.pool, spec.batch, spec.size = 2, 1, 16
    trainer = Trainer(cfg, str(tmp_path))
    assert trainer.load_checkpoint()
    saved = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert trainer.step == saved["step"] > 0
    for k, v in saved["ema"].items():
        assert torch.equal(trainer.ema.state_dict()[k], v)
    trainer.train_step()
    assert trainer.step == saved["step"] + 1


def test_a_pool_with_every_trains_only_on_every_nth_step(tmp_path):
    cfg = TrainConfig.load(TINY)
    cfg.pools[1].every = 3
    tr = Trainer(cfg, str(tmp_path))
    asked_steps = []
    pool = tr.pools[1]
    original = pool.ask

    def spy():
        asked_steps.append(tr.step)
        return original()

    pool.ask = spy
    for _ in range(7):
        losses = tr.train_step()
        assert (pool.name in losses) == ((tr.step - 1) % 3 == 0)
    assert asked_steps == [0, 3, 6]


def test_every_must_be_a_whole_number_of_steps():
    import pytest
    from metaphys.train.pools import PoolSpec
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            PoolSpec(pde="laplace", every=bad)


def test_a_pool_state_saved_with_other_problem_fields_starts_fresh_pools(tmp_path, capsys):
    # a local pools.pt written before a problem's fields changed (the cloth's collider table replaced
    # its sphere and box lists) resumed into problems missing a field: the first step raised KeyError
    cfg = TrainConfig.load(TINY)
    first = Trainer(cfg, str(tmp_path))
    first.train_step()
    first.save_checkpoint()
    pools = torch.load(first.pools_path(), weights_only=True)
    fields = pools["pools"][1]["fields"]
    fields["old_name"] = fields.pop(sorted(fields)[0])        # a field renamed since the save
    torch.save(pools, first.pools_path())
    resumed = Trainer(cfg, str(tmp_path))
    assert resumed.load_checkpoint()
    assert "no matching pool state" in capsys.readouterr().err
    resumed.train_step()                                        # runs on fresh pools
    assert resumed.step == 2


def test_the_sizes_recipe_adds_grids_with_odd_unet_levels_that_no_gate_or_eval_uses():
    """configs/cpu_sizes.yaml (issue #29): cpu.yaml's pools (all multiples of 16) plus Laplace at sizes whose
    U-Net pyramid meets an odd side, none of them a guard or eval size (those stay held out)."""
    import os
    from metaphys.eval.quick import GUARD_SIZES
    from metaphys.train.config import TrainConfig
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = TrainConfig.load(os.path.join(root, "configs", "cpu.yaml"))
    sizes = TrainConfig.load(os.path.join(root, "configs", "cpu_sizes.yaml"))
    assert all(p.size % 16 == 0 for p in base.pools)
    key = lambda p: (p.pde, p.size, p.ipt)
    assert {key(p) for p in base.pools} <= {key(p) for p in sizes.pools}
    added = [p for p in sizes.pools if key(p) not in {key(q) for q in base.pools}]
    assert added and all(p.pde == "laplace" and p.size % 16 for p in added)
    assert not {p.size for p in added} & (set(GUARD_SIZES) | {100, 92, 108})
    # sizes odd at several pyramid levels (the failures left after the first pools: 63, 99, 101) are
    # trained too, at sizes of their own, not the probes of benchmarks/network_sizes.py
    odd_levels = lambda n: [k for k in range(4) if (n >> k) % 2]
    multi = {p.size for p in added if len(odd_levels(p.size)) > 1}
    assert {len(odd_levels(n)) for n in multi} >= {2, 3, 4} and not multi & {63, 99, 101}
