"""Every sim follows sims/base.py: ``Sim`` subclass, ``run`` = ``field`` after each ``step``, ``finite``,
and ``state_dict``/``load_state_dict`` that continue bit for bit with any optimizer (the optimizer
owns its state's format, so a bake with Adam resumes as one with the Metamizer does)."""
import numpy as np
import pytest
import torch

from metaphys.optim.baselines import TorchOptimizer
from metaphys.optim.metamizer import Metamizer, MetamizerNet
from metaphys.sims import BurgersSim, ClothSim, DiffusionSim, SmokeSim, WaveSim
from metaphys.sims.base import Sim


def tiny_metamizer():
    torch.manual_seed(0)
    return Metamizer(MetamizerNet(hidden=4).eval())


def adam():
    return TorchOptimizer("adam", 1e-3)


def bump(n=16):
    yy, xx = np.mgrid[0:n, 0:n]
    return np.exp(-((yy - n / 2) ** 2 + (xx - n / 2) ** 2) / 8.0)


SIMS = {
    "cloth": lambda opt: ClothSim(16, 16, solver="metamizer", tol=None, iterations_per_step=2, optimizer=opt),
    "smoke": lambda opt: SmokeSim((16, 16), iterations_per_step=2, optimizer=opt),
    "diffusion": lambda opt: DiffusionSim((16, 16), D=0.1, source=bump(), iterations_per_step=2, optimizer=opt),
    "wave": lambda opt: WaveSim((16, 16), x0=bump(), iterations_per_step=2, optimizer=opt),
    "burgers": lambda opt: BurgersSim(np.stack([bump(), -bump()]), iterations_per_step=2, optimizer=opt),
}


@pytest.mark.parametrize("name", sorted(SIMS))
def test_run_stacks_the_field_after_each_step(name):
    sim = SIMS[name](tiny_metamizer())
    assert isinstance(sim, Sim)
    seen = []
    out = sim.run(2, callback=lambda s: seen.append(np.array(s.field, copy=True)))
    assert out.shape == (2,) + np.shape(sim.field) and len(sim.records) == 2
    assert np.array_equal(out[-1], sim.field) and np.array_equal(out[0], seen[0]) and sim.finite()
    with pytest.raises(ValueError, match=f"{sim.step_unit} must be >= 1, got 0"):
        sim.run(0)


@pytest.mark.parametrize("make_opt", [tiny_metamizer, adam], ids=["metamizer", "adam"])
@pytest.mark.parametrize("name", sorted(SIMS))
def test_state_dict_continues_bit_for_bit(name, make_opt):
    a = SIMS[name](make_opt())
    a.step()
    saved = a.state_dict()
    a.step()
    b = SIMS[name](make_opt())
    b.load_state_dict(saved)
    b.step()
    assert np.array_equal(a.field, b.field)
    assert [r.as_dict() for r in a.records] == [r.as_dict() for r in b.records]
