"""SmokeSim with the shipped weights: positivity, mass balance, obstacles, density tolerance and
solvers, bad input."""
import numpy as np
import pytest

from metaphys.sims.smoke import SmokeSim


def _sim(opt, **kw):
    base = dict(iterations_per_step=10, optimizer=opt)
    base.update(kw)
    return SmokeSim(base.pop("resolution", (32, 32)), **base)


def test_density_stays_nonnegative_and_mass_balances(shipped_optimizer):
    sim = _sim(shipped_optimizer, density_diffusion=0.0, density_tol=1e-12)
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
    (dict(resolution=(8, 8)), r"SmokeSim\(resolution=...\): expected a list of 2 integers >= 16"),
    (dict(buoyancy=float("nan")), r"SmokeSim\(buoyancy=...\): expected a number .*, got NaN"),
    (dict(emitters=np.ones((5, 5))), r"SmokeSim\(emitters=...\): expected shape \[32, 32\] or \[frames >= 1, 32, 32\]"),
    (dict(viscosity=-1.0), r"SmokeSim\(viscosity=...\): expected a number >= 0"),
    (dict(obstacle_shapes=[{"type": "star", "center": [5, 5]}]),
     r"obstacle_shapes\[0\].type: expected one of \"circle\", \"box\", got \"star\""),
    (dict(density_tol=1.5), r"SmokeSim\(density_tol=...\): expected a number in \(0, 1\) \(relative to the density peak\)"),
    (dict(density_solver="cg"), r"SmokeSim\(density_solver=...\): expected one of \"gmres\""),
    (dict(density_max_iterations=0), r"SmokeSim\(density_max_iterations=...\): expected an integer >= 1, got 0"),
])
def test_bad_parameters_fail_fast(shipped_optimizer, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _sim(shipped_optimizer, **kwargs)


def _run(sim, frames):
    return np.stack([(sim.step(), sim.density.copy())[1] for _ in range(frames)])


def test_density_tol_is_relative_and_bounds_the_error(shipped_optimizer):
    # no buoyancy: the fluid does not feel the density, so only the density tolerance differs
    kw = dict(buoyancy=0.0, emitter_velocity=(0.3, -0.6), density_diffusion=0.05)
    ref_sim = _sim(shipped_optimizer, density_tol=1e-11, **kw)
    ref = _run(ref_sim, 8)
    peak = float(np.abs(ref).max())
    iterations = {}
    for tol in (1e-2, 1e-4):
        sim = _sim(shipped_optimizer, density_tol=tol, **kw)
        d = _run(sim, 8)
        iterations[tol] = sum(r.iterations for r in sim.density_records)
        # each step's error is <= tol * peak; 8 steps of a non-expansive transport add at most 8x
        assert np.abs(d - ref).max() <= 8 * tol * peak, (tol, np.abs(d - ref).max() / peak)
    assert iterations[1e-2] < iterations[1e-4] < sum(r.iterations for r in ref_sim.density_records)


def test_default_density_solve_is_within_accuracy_target(shipped_optimizer):
    """Default GMRES density solve vs a converged density solve of the same scene (with buoyancy)."""
    ref = _run(_sim(shipped_optimizer, density_tol=1e-11), 12)
    sim = _sim(shipped_optimizer)
    d = _run(sim, 12)
    assert sim.density_solver == "gmres" and sim.density_tol == 1e-6
    assert np.linalg.norm(d - ref) / np.linalg.norm(ref) <= 1e-3
    assert max(r.iterations for r in sim.density_records) <= 20
    assert not any(r.hit_cap for r in sim.density_records)


@pytest.mark.parametrize("solver", ["metamizer", "fgmres-metamizer"])
def test_other_density_solvers_agree_with_gmres(shipped_optimizer, solver):
    ref = _run(_sim(shipped_optimizer, density_tol=1e-11), 4)
    sim = _sim(shipped_optimizer, density_solver=solver, density_tol=1e-6)
    d = _run(sim, 4)
    assert np.linalg.norm(d - ref) / np.linalg.norm(ref) <= 1e-4
    if solver == "fgmres-metamizer":   # plain Metamizer iterations may stall at their cap at 1e-6
        assert not any(r.hit_cap for r in sim.density_records)


def test_threads_are_chosen_per_grid_and_restored(shipped_optimizer):
    import torch
    sim = _sim(shipped_optimizer)
    assert sim.threads == 1          # 32^2: below the size where a second thread pays (threads_for_grid)
    seen = []
    original = sim.fluid.loss_and_grad

    def spy(u):
        seen.append(torch.get_num_threads())
        return original(u)

    sim.fluid.loss_and_grad = spy
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sim.step()
        assert set(seen) == {1}                       # stepped on the sim's thread count...
        assert torch.get_num_threads() == 2           # ... and the caller's count is back
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match=r"SmokeSim\(threads=...\): expected an integer >= 1 or None, got 0"):
        _sim(shipped_optimizer, threads=0)
