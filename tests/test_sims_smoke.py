"""SmokeSim with the shipped weights: positivity, mass balance, obstacles, bad input."""
import numpy as np
import pytest

from metaphys.sims.smoke import SmokeSim


def _sim(opt, **kw):
    base = dict(iterations_per_step=10, optimizer=opt)
    base.update(kw)
    return SmokeSim(base.pop("resolution", (32, 32)), **base)


def test_density_stays_nonnegative_and_mass_balances(shipped_optimizer):
    sim = _sim(shipped_optimizer, density_diffusion=0.0, density_tol=1e-24, density_max_iterations=400)
    peak = 0.0
    for _ in range(6):
        sim.step()
        d = sim.density
        peak = max(peak, float(d.max()))
        assert d.min() >= -0.01 * peak, "density undershoot beyond 1% of its peak"
        total, injected = float(sim.total_density()), float(sim.injected)
        assert abs(total - injected) <= 1e-8 * injected, (total, injected)


def test_obstacle_cells_stay_empty(shipped_optimizer):
    obst = np.zeros((32, 32))
    obst[10:15, 12:20] = 1
    sim = _sim(shipped_optimizer, obstacles=obst, buoyancy=0.05)
    for _ in range(5):
        sim.step()
    assert np.all(sim.density[obst == 1] == 0)
    assert sim.density.max() > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(resolution=(8, 8)), ">= 16"),
    (dict(buoyancy=float("nan")), "buoyancy"),
    (dict(emitters=np.ones((5, 5))), "emitters must have shape"),
    (dict(viscosity=-1.0), "viscosity must be >= 0"),
    (dict(obstacle_shapes=[{"type": "star"}]), "circle' or 'box"),
])
def test_bad_parameters_fail_fast(shipped_optimizer, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _sim(shipped_optimizer, **kwargs)
