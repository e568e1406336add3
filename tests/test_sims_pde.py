"""The paper's other systems through the public API; batching; lazy top-level names."""
import subprocess
import sys

import numpy as np
import torch

import metaphys as mp
from metaphys.optim.baselines import linear_solve
from metaphys.physics import LaplaceProblem, frame_mask


def test_solve_poisson_matches_direct_solve(shipped_optimizer):
    f = np.zeros((40, 40))
    f[18:22, 10:14], f[18:22, 26:30] = -0.1, 0.1
    u, res = mp.solve_poisson(f, tol=1e-24, max_iterations=400, optimizer=shipped_optimizer)
    direct = linear_solve(LaplaceProblem(frame_mask(1, 40, 40), 0.0, torch.as_tensor(f).view(1, 1, 40, 40)),
                          "direct", 1)["u"][0, 0].numpy()
    assert res.residual.item() <= 1e-24 or res.hit_cap
    assert np.abs(u - direct).max() <= 1e-6 * np.abs(direct).max()


def test_batched_simulations_match_single_ones(shipped_optimizer):
    src = np.zeros((2, 1, 32, 32))
    src[0, 0, 10:14, 10:14] = 1
    src[1, 0, 20:24, 8:12] = 0.5
    both = mp.DiffusionSim((32, 32), D=0.5, source=src, batch=2, iterations_per_step=8, guard=False,
                           optimizer=shipped_optimizer)
    both.run(3)
    for k in range(2):
        one = mp.DiffusionSim((32, 32), D=0.5, source=src[k:k + 1], iterations_per_step=8, guard=False,
                              optimizer=shipped_optimizer)
        one.run(3)
        # same steps up to float32 differences of a batched vs. single convolution
        assert np.abs(both.field[k] - one.field).max() <= 1e-5 * np.abs(one.field).max()


def test_wave_and_burgers_steps_reduce_their_residual(shipped_optimizer):
    emit = np.zeros((32, 32))
    emit[14:18, 14:18] = 1
    mask = np.maximum(frame_mask(1, 32, 32)[0, 0].numpy(), emit)
    wave = mp.WaveSim((32, 32), c=1.0, mask=mask, boundary=lambda t: emit * np.sin(0.5 * t),
                      iterations_per_step=20, optimizer=shipped_optimizer)
    wave.run(4)
    assert all(r.residual < r.residual_start for r in wave.records if r.residual_start > 0)
    rng = np.random.default_rng(0)
    burgers = mp.BurgersSim(0.3 * rng.standard_normal((2, 32, 32)), mu=1.0, iterations_per_step=20,
                            optimizer=shipped_optimizer)
    burgers.run(2)
    assert all(r.residual < 1e-2 * r.residual_start for r in burgers.records)


def test_import_is_lazy():
    code = "import sys, metaphys; assert 'torch' not in sys.modules; print(metaphys.__version__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    assert mp.ClothSim.__name__ == "ClothSim" and callable(mp.solve)
