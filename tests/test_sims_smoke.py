"""SmokeSim with the shipped weights: physical units (the same plume at any resolution and fps),
a density that never goes negative and balances its mass, CFL sub-stepping, the emitters' push,
heat (buoyancy, cooling), obstacles, removed grid-unit arguments and bad input."""
import numpy as np
import pytest

from metaphys.sims.smoke import GridUnits, SmokeSim


def _sim(opt, **kw):
    base = dict(iterations_per_step=10, optimizer=opt, threads=1)
    base.update(kw)
    return SmokeSim(base.pop("resolution", (32, 32)), **base)


def cap_height(d: np.ndarray, frac: float = 0.1) -> float:
    """Highest row (fraction of the height above the bottom) whose max density reaches frac of the peak."""
    rows = d.max(axis=1)
    top = np.nonzero(rows >= frac * rows.max())[0][0]
    return (len(rows) - top - 0.5) / len(rows)


def test_grid_units_map_si_to_cells_and_frames():
    g = GridUnits(cell_m=0.01, frame_s=0.04)
    assert g.speed(1.0) == pytest.approx(4.0)               # 1 m/s = 4 cells per frame
    assert g.acceleration(10.0) == pytest.approx(1.6)        # 10 m/s^2 * (0.04 s)^2 / 0.01 m
    assert g.diffusivity(1e-3) == pytest.approx(0.4)         # 1e-3 m^2/s * 0.04 s / (0.01 m)^2
    assert g.rate(5.0) == pytest.approx(0.2)


@pytest.mark.parametrize("kw", [{}, dict(buoyancy=200.0, density_diffusion=1e-3)])
def test_density_stays_nonnegative_and_mass_balances(shipped_optimizer, kw):
    # the grid-unit smoke went to -1.8 with a strong buoyancy; a monotone transport cannot
    sim = _sim(shipped_optimizer, **kw)
    for _ in range(8):
        rec = sim.step()
        assert sim.density.min() >= 0.0 and rec.min_density == sim.density.min()
        total, injected = float(sim.total_density()), float(sim.injected)
        assert abs(total - injected) <= 1e-12 * injected, (total, injected)  # walls pass nothing
    assert sim.density.max() > 0.1


def test_the_plume_has_the_same_shape_at_two_resolutions(shipped_optimizer):
    """Unit invariance on a small plume: the cap height over 0.75 s agrees within 5 % of the domain
    (benchmarks/smoke_units.py measures 64^2 to 256^2 over 2 s)."""
    caps = {}
    for n in (24, 48):
        sim = _sim(shipped_optimizer, resolution=(n, n))
        caps[n] = [cap_height(d) for d in sim.run(18)[5::6]]
    assert caps[48][-1] > caps[48][0] + 0.05   # it rises
    assert np.abs(np.subtract(caps[24], caps[48])).max() <= 0.05, caps


def test_fps_changes_the_frames_not_the_plume(shipped_optimizer):
    """Bakes at 24 and 48 fps show the same plume at the same times (frame k at 24 fps = frame 2k at 48)."""
    a = _sim(shipped_optimizer, fps=24.0).run(12)
    b = _sim(shipped_optimizer, fps=48.0).run(24)
    for k in (5, 11):
        assert np.linalg.norm(b[2 * k + 1] - a[k]) <= 0.03 * np.linalg.norm(a[k]), k
    assert abs(cap_height(b[-1]) - cap_height(a[-1])) <= 0.04
    # the grid-unit smoke wrote identical frames at any fps: these differ by a factor of 2 in time
    assert np.linalg.norm(b[11] - a[11]) > 0.2 * np.linalg.norm(a[11])


def test_fast_flows_take_more_steps_per_frame(shipped_optimizer):
    sim = _sim(shipped_optimizer, cfl=1.0, buoyancy=20.0)
    recs = [sim.step() for _ in range(10)]
    assert recs[0].substeps == 1 and recs[-1].substeps > 1
    assert all(r.courant <= 1.0 * 1.25 for r in recs), [r.courant for r in recs]  # the speed is predicted
    assert recs[-1].time_s == pytest.approx(10 / 24) and recs[-1].iterations == 10 * recs[-1].substeps
    fixed = _sim(shipped_optimizer, substeps=3)
    assert fixed.step().substeps == 3


def test_emitter_pushes_the_flow_up_to_its_velocity(shipped_optimizer):
    sim = _sim(shipped_optimizer, buoyancy=0.0, emitter_velocity=(0.0, 0.5))
    sim.run(4)
    inside = sim.emitters > 0.99
    vy = sim.velocity[..., 1][inside]
    assert 0.3 < vy.mean() < 0.55, vy.mean()    # m/s, upward; the pressure spreads part of the push
    assert np.abs(sim.velocity[..., 0][inside]).mean() < 0.1 * vy.mean()  # sideways: only the inflow at its rim
    still = _sim(shipped_optimizer, buoyancy=0.0)
    still.run(2)
    assert np.abs(still.velocity).max() < 1e-9   # no push, no buoyancy: nothing moves


@pytest.mark.parametrize("kwargs, frame, cause", [(dict(buoyancy=1e8), 2, "buoyancy=1e+08"),
                                                  (dict(emitter_velocity=(1e6, 0.0)), 1,
                                                   "emitter_velocity=[1000000.0, 0.0]")])
def test_absurd_forces_are_refused_naming_them(shipped_optimizer, kwargs, frame, cause):
    from metaphys.sims import SimulationDiverged
    sim = _sim(shipped_optimizer, **kwargs)
    with pytest.raises(SimulationDiverged, match=rf"SmokeSim diverged at frame {frame}: the flow would need \S+ fluid "
                                                 r"steps in this frame \(more than 1000\)") as info:
        sim.run(3)
    assert cause in str(info.value) and len(sim.records) == frame - 1


def test_heat_lifts_the_smoke_and_cools_at_its_rate(shipped_optimizer):
    """Fire-like plumes: smoke that weighs nothing rises only when its emitter also heats the air; once
    the emitter stops, the total heat decays exactly as exp(-cooling t) (walls pass nothing)."""
    em = np.zeros((12, 32, 32))
    em[:6] = SmokeSim.default_emitter(32, 32)              # emits for 6 frames, then stops
    cold = _sim(shipped_optimizer, emitters=em, buoyancy=0.0)
    hot = _sim(shipped_optimizer, emitters=em, buoyancy=0.0, emitter_heat=2.0, cooling=1.5)
    cold.run(12)
    heat = []
    for _ in range(12):
        hot.step()
        heat.append(float(hot.temperature.sum()))
        assert hot.temperature.min() >= 0.0
    assert np.abs(cold.temperature).max() == 0.0 and np.abs(cold.velocity).max() < 1e-9  # nothing lifts it
    assert cap_height(hot.density) > cap_height(cold.density) + 0.05
    assert heat[-1] / heat[5] == pytest.approx(np.exp(-1.5 * 6 / 24), rel=1e-9)


def test_obstacle_cells_stay_empty(shipped_optimizer):
    obst = np.zeros((32, 32))
    obst[10:15, 12:20] = 1
    sim = _sim(shipped_optimizer, obstacles=obst)
    for _ in range(5):
        sim.step()
    assert np.all(sim.density[obst == 1] == 0)
    assert sim.density.max() > 0


def test_velocity_and_pressure_are_si(shipped_optimizer):
    a = _sim(shipped_optimizer, size_m=1.0)
    # twice as large, as strong and 4x as viscous: the same scene in cells and frames
    b = _sim(shipped_optimizer, size_m=2.0, buoyancy=8.0, viscosity=4e-3)
    a.run(6)
    b.run(6)
    assert np.allclose(b.density, a.density, rtol=1e-6, atol=1e-9)
    assert np.allclose(b.velocity, 2 * a.velocity, rtol=1e-6, atol=1e-9)
    assert np.allclose(b.pressure, 4 * a.pressure, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    (dict(resolution=(8, 8)), r"SmokeSim\(resolution=...\): expected a list of 2 integers >= 16"),
    (dict(buoyancy=float("nan")), r"SmokeSim\(buoyancy=...\): expected a number \(m/s\^2 per unit density\), got NaN"),
    (dict(emitters=np.ones((5, 5))), r"SmokeSim\(emitters=...\): expected shape \[32, 32\] or \[frames >= 1, 32, 32\]"),
    (dict(viscosity=-1.0), r"SmokeSim\(viscosity=...\): expected a number >= 0 \(m\^2/s\)"),
    (dict(size_m=0.0), r"SmokeSim\(size_m=...\): expected a number > 0 \(metres\)"),
    (dict(fps=0.5), r"SmokeSim\(fps=...\): expected a number in \[1, 1000\] \(frames per second\)"),
    (dict(cfl=0), r"SmokeSim\(cfl=...\): expected a number > 0 \(cells per fluid step\)"),
    (dict(substeps=0), r"SmokeSim\(substeps=...\): expected an integer in \[1, 1000\]"),
    (dict(obstacle_shapes=[{"type": "star", "center": [5, 5]}]),
     r"obstacle_shapes\[0\].type: expected one of \"circle\", \"box\", got \"star\""),
    (dict(density_tol=1e-6), r"SmokeSim\(density_tol=...\): this key was removed: the density transport is explicit"),
    (dict(dt=1.0), r"SmokeSim\(dt=...\): this argument was removed: time steps follow fps, substeps and cfl"),
    (dict(density_solver="gmres"), r"SmokeSim\(density_solver=...\): this argument was removed"),
])
def test_bad_parameters_fail_fast(shipped_optimizer, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _sim(shipped_optimizer, **kwargs)


def test_unknown_arguments_are_a_type_error(shipped_optimizer):
    with pytest.raises(TypeError, match="unexpected keyword argument 'buoyancyy'"):
        _sim(shipped_optimizer, buoyancyy=1.0)


def test_threads_are_chosen_per_grid_and_restored(shipped_optimizer):
    import torch
    sim = _sim(shipped_optimizer, threads=None)
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
        sim.step()
        assert set(seen) == {1}                       # stepped on the sim's thread count...
        assert torch.get_num_threads() == 2           # ... and the caller's count is back
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match=r"SmokeSim\(threads=...\): expected an integer >= 1 or None, got 0"):
        _sim(shipped_optimizer, threads=0)


def test_sim_threads_hold_blas_too():
    # numpy's OpenBLAS threads dot products above 10,000 entries: a cloth's CG at 64^2 kept a second
    # thread spinning while the sim claimed one thread. torch_threads holds BLAS to the same count.
    import numpy as np
    from threadpoolctl import threadpool_info

    from metaphys.sims.common import torch_threads

    np.ones(4) @ np.ones(4)   # numpy's BLAS loaded
    blas = lambda: {d["filepath"]: d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}
    before = blas()
    assert before, "no BLAS library seen by threadpoolctl"
    with torch_threads(1):
        assert set(blas().values()) == {1}
    assert blas() == before


def test_importing_metaphys_first_bounds_openmp_spinning():
    # libgomp's default spinning made a two-thread 128^2 frame 2-16x slower than one thread beside
    # another job (benchmarks/results/threads_contention.md); metaphys sets a short spin count before
    # torch loads, unless the user chose a policy
    import os
    import subprocess
    import sys

    import metaphys

    def spin(**env):
        base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
        out = subprocess.run([sys.executable, "-c", "import metaphys, os, torch; print(os.environ.get('GOMP_SPINCOUNT'))"],
                             env={**base, **env}, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    assert spin() == metaphys.OPENMP_SPINCOUNT == "3000"
    assert spin(GOMP_SPINCOUNT="77") == "77"
    assert spin(OMP_WAIT_POLICY="ACTIVE") == "None"


def test_two_threads_after_an_early_torch_import_warn_once():
    # torch imported before metaphys: libgomp already read its (long) default spin count
    import os
    import subprocess
    import sys

    code = ("import torch, metaphys, warnings; from metaphys.sims.common import torch_threads\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    for n in (1, 2, 2):\n"
            "        with torch_threads(n): pass\n"
            "print(metaphys.OPENMP_WAIT_BOUNDED, sum('imported after torch' in str(x.message) for x in w))")
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    run = lambda first, **env: subprocess.run([sys.executable, "-c", code.replace("torch, metaphys", first)],
                                               env={**base, **env}, capture_output=True, text=True, check=True).stdout.split()
    assert run("torch, metaphys") == ["False", "1"]          # warned once, at the first two-thread block
    assert run("metaphys, torch") == ["True", "0"]           # metaphys first: bounded, no warning
    assert run("torch, metaphys", GOMP_SPINCOUNT="50") == ["True", "0"]   # the user's own setting
