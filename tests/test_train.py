"""Training: a tiny recipe runs, losses are finite, checkpoint/resume is bit-exact."""
import os

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
