"""The sims' network precision (issue #28): the 3-D smoke runs its network in bfloat16 where the CPU has
bf16 in hardware (metaphys.optim.fast.sim_network_dtype), float32 elsewhere and for 2-D; an environment
override; and a bfloat16 plume stops every fluid step at the same tolerance as a float32 one, with the
same density to far below the issue's 1e-3 (run emulated where the CPU lacks bf16: slower, same result)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import metaphys.optim.fast as fast
from metaphys.sims.common import optimizer_for


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv(fast.NETWORK_DTYPE_ENV, raising=False)
    return monkeypatch


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bfloat16_for_3d_only_where_the_cpu_has_it(env, native):
    env.setattr(fast, "native_bf16", lambda: native)
    assert fast.sim_network_dtype(3) == (torch.bfloat16 if native else torch.float32)
    assert fast.sim_network_dtype(2) == torch.float32


def test_the_environment_overrides_the_choice_and_refuses_anything_else(env):
    env.setattr(fast, "native_bf16", lambda: True)
    env.setenv(fast.NETWORK_DTYPE_ENV, "float32")
    assert fast.sim_network_dtype(3) == torch.float32
    env.setenv(fast.NETWORK_DTYPE_ENV, " BFloat16 ")
    assert fast.sim_network_dtype(2) == torch.bfloat16
    env.setenv(fast.NETWORK_DTYPE_ENV, "half")
    with pytest.raises(ValueError, match="METAPHYS_NETWORK_DTYPE must be auto, float32 or bfloat16, got 'half'"):
        fast.sim_network_dtype(3)


@pytest.mark.parametrize("choice, dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_the_3d_sims_optimizer_runs_the_chosen_precision(env, choice, dtype):
    env.setenv(fast.NETWORK_DTYPE_ENV, choice)
    opt = optimizer_for(None, None, "cpu", fastest=True, dims=3)
    assert isinstance(opt, fast.FastMetamizer) and opt.dtype == dtype
    assert opt.model is fast.shipped_fast_module(3, dtype)          # built once per process and precision
    g = torch.randn(1, 1, 16, 16, 16, dtype=torch.float64)
    step, _ = opt.model(g, torch.zeros_like(g), torch.zeros_like(g), torch.full((1,), 0.05, dtype=torch.float64))
    assert step.dtype == torch.float64 and bool(torch.isfinite(step).all())
    # a caller's optimizer is never replaced
    mine = fast.FastMetamizer(dims=3)
    assert optimizer_for(mine, None, "cpu", fastest=True, dims=3) is mine


def test_a_bfloat16_plume_stops_at_the_same_tolerance_with_the_same_density(env):
    from metaphys.sims import SmokeSim3D
    runs = {}
    for name in ("float32", "bfloat16"):
        env.setenv(fast.NETWORK_DTYPE_ENV, name)
        sim = SmokeSim3D((16, 16, 16), threads=1)
        assert sim.step_solver.optimizer.dtype == fast.DTYPE_NAMES[name]
        for _ in range(4):
            sim.step()
        assert not any(r.hit_cap for r in sim.records)                  # every fluid step at its tolerance
        assert max(r.residual for r in sim.records) <= sim.settings.tol
        runs[name] = sim.density.copy()
    a, b = runs["float32"], runs["bfloat16"]
    assert float(a.sum()) > 0
    assert np.linalg.norm(b - a) / np.linalg.norm(a) < 1e-4             # the target is 1e-3 vs converged
    assert not np.array_equal(a, b)                                     # two precisions did run


@pytest.mark.parametrize("choice", ["float32", "bfloat16"])
def test_a_plain_metamizer_becomes_the_fast_module_in_the_sims_precision(env, choice):
    """What a bake's loaded weights go through (sims.common.fastest_forward): a 3-D network in the sims'
    precision, a 2-D one in float32 whatever the choice for 3-D."""
    from metaphys.optim.metamizer import Metamizer
    from metaphys.sims.common import fastest_forward, network_dtype_name
    env.setenv(fast.NETWORK_DTYPE_ENV, choice)
    three = fastest_forward(Metamizer(dims=3), "cpu")
    assert isinstance(three, fast.FastMetamizer) and three.dtype == fast.DTYPE_NAMES[choice]
    env.setenv(fast.NETWORK_DTYPE_ENV, "auto")
    two = fastest_forward(Metamizer(), "cpu")
    assert two.dtype == torch.float32

    class Sim:   # what network_dtype_name reads: the sim's step solver's optimizer
        pass
    sim = Sim()
    sim.step_solver = Sim()
    sim.step_solver.optimizer = three
    assert network_dtype_name(sim) == choice
    sim.step_solver.optimizer = Metamizer()
    assert network_dtype_name(sim) == "float32"
    sim.step_solver = object()              # a solver without a network (cloth's Newton)
    assert network_dtype_name(sim) is None
