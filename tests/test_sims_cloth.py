"""ClothSim in physical units: sagging, PC2 round trip, colliders, the convergence gauge and its
Newton finishing stage, material invariance across resolution and frame rate, bad input."""
import numpy as np
import pytest
import torch

from metaphys.io import pc2
from metaphys.optim.baselines import TorchOptimizer
from metaphys.sims.cloth import ClothSim, flat_cloth


def _sim(opt, **kw):
    base = dict(rows=32, cols=32, size_m=1.0, iterations_per_step=20, optimizer=opt, colliders=[],
                solver="metamizer", tol=None)
    base.update(kw)
    return ClothSim(base.pop("rows"), base.pop("cols"), **base)


def test_cloth_pinned_at_two_corners_sags_and_pc2_round_trips(shipped_optimizer, tmp_path):
    sim = _sim(shipped_optimizer)
    frames = sim.run(12)
    assert np.isfinite(frames).all()
    z0 = sim.rest_positions[:, 2]
    last = frames[-1]
    pinned = [0, 31]
    assert np.allclose(last[pinned], sim.rest_positions[pinned], atol=1e-12)  # hard pins stay put
    assert last[:, 2].mean() < z0.mean() - 0.05  # the free cloth fell/sagged under gravity
    path = tmp_path / "c.pc2"
    pc2.write_pc2(path, frames.astype(np.float32))
    back, start, rate = pc2.read_pc2(path)
    assert np.array_equal(back, frames.astype(np.float32)) and start == 1.0


def test_every_frame_records_the_gauge(shipped_optimizer):
    sim = _sim(shipped_optimizer, rows=16, cols=16)
    rec = sim.step()
    assert rec.relative_residual is not None and rec.relative_residual > 0
    assert rec.max_strain is not None and rec.finished_by == "metamizer" and rec.converged is None
    assert sim.threads == 1  # small grids run on one thread


def test_cloth_on_sphere_does_not_penetrate():
    radius = 0.3
    center = np.array([0.0, 0.0, 0.5])
    sim = ClothSim(16, 16, pin_weights=np.zeros(256), colliders=[{"type": "sphere", "center": center,
                                                                  "radius": radius}],
                   rest_positions=flat_cloth(16, 16, 1.0, height=0.9), solver="newton", tol=1e-8)
    tolerance = sim.length_unit * sim.problem.fields["margin"].item()  # contact margin in metres
    worst = 0.0
    for _ in range(8):
        rec = sim.step()
        assert rec.converged and rec.finished_by == "newton"
        d = np.linalg.norm(sim.positions.reshape(-1, 3) - center, axis=1) - radius
        worst = min(worst, float(d.min()))
    assert worst > -tolerance, f"penetration {-worst:.4f} m exceeds the contact tolerance {tolerance:.4f} m"
    assert sim.positions[..., 2].max() < 0.9


def test_a_stalling_optimizer_triggers_the_newton_finishing_stage():
    # SGD with a tiny learning rate cannot reach the tolerance in its 5 iterations
    sim = ClothSim(16, 16, colliders=[], optimizer=TorchOptimizer("sgd", lr=1e-9), iterations_per_step=5,
                   solver="auto", tol=1e-8, step_tol=None)
    for _ in range(3):
        rec = sim.step()
        assert rec.iterations == 5 and rec.finished_by == "newton" and rec.newton_iterations > 0
        assert rec.converged and rec.relative_residual <= 1e-8
    # the frame really is converged: the step's gradient at the solution is tiny against gravity
    assert all(r.relative_residual <= 1e-8 for r in sim.records)


def _settled_curtain(n, fps=24.0, frames=10):
    """A curtain pinned along its top row, heavily damped so it settles: converged steps."""
    w = np.zeros(n * n)
    w[:n] = 1.0
    sim = ClothSim(n, n, rest_positions=flat_cloth(n, n, 1.0, height=1.0, plane="xz"), pin_weights=w,
                   colliders=[], solver="newton", tol=1e-9, air_damping=30.0, tension=40.0, fps=fps,
                   wind=(0.0, 2.0, 0.0))
    sim.run(frames)
    p = sim.positions.reshape(-1, 3)
    return p[:, 1].max(), p[:, 2].min()  # sideways sway, lowest point


def test_material_is_the_same_at_two_resolutions_and_two_frame_rates():
    sway16, low16 = _settled_curtain(16)
    sway24, low24 = _settled_curtain(24)
    sway_f, low_f = _settled_curtain(16, fps=48.0, frames=20)  # the same 0.42 s at twice the rate
    assert sway16 > 0.02  # the wind really pushed it (not a trivial agreement at rest)
    for a, b in ((sway16, sway24), (low16, low24), (sway16, sway_f), (low16, low_f)):
        assert abs(a - b) < 0.02, f"shape differs by {abs(a - b):.4f} m (> 2 % of the 1 m cloth)"


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=8, cols=16), r"ClothSim\(rows=...\): expected an integer (>= 16|in \[16, \d+\]), got 8"),
    (dict(rows=np.int64(8)), r"ClothSim\(rows=...\): expected an integer (>= 16|in \[16, \d+\]), got 8"),
    (dict(pin_weights=np.full(1024, 1.5)), r"ClothSim\(pin_weights=...\): expected values in \[0, 1\], got 1.5"),
    (dict(pin_weights=np.ones(10)), r"ClothSim\(pin_weights=...\): expected 1024 numbers \(rows\*cols = 32\*32\)"),
    (dict(gravity=(0, 0, float("nan"))), r"ClothSim\(gravity=...\): expected a list of 3 numbers .*, got \[0, 0, NaN\]"),
    (dict(tension=-1.0), r"ClothSim\(tension=...\): expected a number > 0 \(N/m\), got -1.0"),
    (dict(solver="cg"), r"ClothSim\(solver=...\): expected one of \"auto\", \"metamizer\", \"newton\""),
    (dict(solver="newton", tol=None), "needs a tolerance"),
    (dict(colliders=[{"type": "cone", "center": [0, 0, 0]}]),
     r"ClothSim\(colliders=...\): colliders\[0\].type: expected one of \"sphere\", \"box\", \"mesh\", got \"cone\""),
    (dict(colliders=[{"type": "sphere", "center": [0, 0, 0], "radius": -1}]),
     r"colliders\[0\].radius: expected a number > 0 \(metres\), got -1"),
    (dict(iterations_per_step=0), r"ClothSim\(iterations_per_step=...\): expected an integer >= 1 or None, got 0"),
])
def test_bad_parameters_fail_fast(shipped_optimizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _sim(shipped_optimizer, **kwargs)


def test_numpy_ints_are_accepted_and_run_zero_is_an_error(shipped_optimizer):
    sim = _sim(shipped_optimizer, rows=np.int64(16), cols=np.int64(16))
    with pytest.raises(ValueError, match="frames must be >= 1, got 0"):
        sim.run(0)


def test_converged_results_do_not_depend_on_the_thread_count():
    def final(threads):
        sim = ClothSim(16, 16, colliders=[], solver="newton", tol=1e-10, threads=threads, wind=(0.0, 2.0, 0.0))
        sim.run(3)
        assert sim.threads == threads
        return sim.positions
    a, b = final(1), final(2)
    assert np.abs(a - b).max() < 1e-8  # metres: far below anything visible, set by the tolerance


def test_auto_skips_a_metamizer_stage_that_keeps_missing_and_the_result_is_unchanged():
    def run(solver):
        sim = ClothSim(16, 16, colliders=[], optimizer=TorchOptimizer("sgd", lr=1e-9), iterations_per_step=4,
                       solver=solver, tol=1e-8)
        sim.run(6)
        return sim
    auto, newton = run("auto"), run("newton")
    its = [r.iterations for r in auto.records]
    assert its[:3] == [4, 4, 4] and 0 in its[3:]  # three misses, then the stage is skipped
    assert np.abs(auto.positions - newton.positions).max() < 1e-9  # same starts -> same converged answer


# --- issue #24: the Newton-Krylov default, its lagged factor in the state, the frame budget ------------
def _drape16(**kw):
    corners = np.zeros(16 * 16)
    corners[0] = corners[15] = 1.0
    return ClothSim(16, 16, rest_positions=flat_cloth(16, 16, 1.0, height=0.9), pin_weights=corners,
                    colliders=[{"type": "sphere", "center": [0.0, 0.1, 0.55], "radius": 0.25}], threads=1, **kw)


def test_a_resumed_cloth_rebuilds_the_lagged_factor_and_continues_bit_for_bit():
    sim = _drape16()
    for _ in range(3):
        sim.step()
    saved = sim.state_dict()
    assert saved["newton"], "the Newton-Krylov solver's lagged factor belongs to the state"
    for _ in range(3):
        sim.step()
    resumed = _drape16()
    resumed.load_state_dict(saved)
    for _ in range(3):
        resumed.step()
    assert np.array_equal(resumed.positions, sim.positions)
    assert [r.newton_iterations for r in resumed.records[3:]] == [r.newton_iterations for r in sim.records[3:]]


def test_a_resume_rebuilds_an_ldlt_lagged_factor_as_ldlt():
    """Where the lagged factor at the save was LDL^T (after a Cholesky refusal), the resumed sim
    rebuilds LDL^T, keeps the count of LDL^T factorizations left, and continues bit for bit."""
    sim = _drape16()
    for _ in range(3):
        sim.step()
    pc = sim.step_solver.newton_solver.preconditioner
    pc.indefinite_for, pc.stale = 50, True        # as after a refusal: the next factors are LDL^T
    sim.step()
    assert pc.lu.mtype == -2
    saved = sim.state_dict()
    assert saved["newton"]["definite"] is False and 0 < saved["newton"]["indefinite_for"] < 50
    for _ in range(2):
        sim.step()
    resumed = _drape16()
    resumed.load_state_dict(saved)
    rpc = resumed.step_solver.newton_solver.preconditioner
    assert rpc.lu.mtype == -2 and rpc.indefinite_for == saved["newton"]["indefinite_for"]
    for _ in range(2):
        resumed.step()
    assert np.array_equal(resumed.positions, sim.positions)


def test_a_frame_at_its_time_budget_stops_and_says_so():
    sim = _drape16(tol=1e-12, frame_time_budget=1e-6)
    rec = sim.step()
    assert rec.budget_hit == "time" and rec.converged is False and sim.finite()


def test_a_frame_at_its_iteration_budget_keeps_its_best_iterate_and_says_so():
    sim = _drape16(tol=1e-14, newton_max_iterations=3)
    rec = sim.step()
    assert rec.budget_hit == "iterations" and rec.converged is False and rec.newton_iterations == 3
    assert sim.finite() and sim.records[-1].max_strain < 0.5


def test_newton_iterations_are_reported_to_on_progress():
    sim = _drape16()
    seen = []
    sim.on_progress = seen.append
    sim.step()
    assert seen and seen[-1]["frame"] == 1 and seen[-1]["newton_iteration"] == sim.records[-1].newton_iterations
    assert all(d["relative_residual"] > 0 for d in seen)


def test_the_default_cloth_solver_is_newton_krylov_within_its_tolerance():
    sim = _drape16()
    assert sim.solver == "newton" and sim.newton.linear == "pcg" and sim.optimizer is None
    recs = [sim.step() for _ in range(4)]
    assert all(r.converged and r.finished_by == "newton" for r in recs)
    # converged by the residual (tol 1e-5) or by the step estimate (step_tol): either leaves the
    # residual far below the start's
    assert all(r.relative_residual <= 1e-2 * max(r.residual_start, 1.0) for r in recs)


def test_the_step_stop_keeps_each_step_near_a_converged_one():
    # the default stop (residual 1e-5 or an estimated distance of 3e-4 edge lengths to the answer)
    # against a 1e-10 solve of the same steps: each step within the 1e-3 edge lengths the eye needs
    # (no collider: with contact a step's energy can have several minima, and a 1e-10 solve may find another)
    def swing(**kw):
        return ClothSim(16, 16, rest_positions=flat_cloth(16, 16, 1.0, height=0.9), colliders=[], threads=1,
                        bending=2.5e-3, **kw)
    fast, exact = swing(), swing(tol=1e-10, step_tol=None)
    assert fast.step_tol == 3e-4 and exact.step_tol is None
    worst, stopped = 0.0, set()
    for _ in range(6):
        exact.load_state_dict(fast.state_dict())
        fast.step()
        exact.step()
        stopped.add(fast.records[-1].converged)
        worst = max(worst, float(np.abs(fast.positions - exact.positions).max()) / fast.length_unit)
    assert stopped == {True}
    fast_its = sum(r.newton_iterations for r in fast.records)
    exact_its = sum(r.newton_iterations for r in exact.records)
    assert fast_its < exact_its
    assert worst <= 1e-3, f"a step ended {worst:.2e} edge lengths from the converged step"


def test_a_built_sim_has_loaded_what_its_first_frame_needs():
    # the one-time costs (the Hessian's sparsity pattern, the BLAS thread control, MKL) are paid when
    # the sim is built: a first frame otherwise took ~7x the next one (curtain 32^2: 365 vs 47 ms)
    from metaphys.physics.cloth_hessian import blocks_to_csr_pattern
    from metaphys.sims import common

    blocks_to_csr_pattern.cache_clear()
    sim = ClothSim(17, 16, colliders=[], solver="newton", threads=1)
    hits_before = blocks_to_csr_pattern.cache_info().hits
    assert blocks_to_csr_pattern.cache_info().currsize == 1
    assert common._blas is not None
    sim.step()
    info = blocks_to_csr_pattern.cache_info()
    assert info.currsize == 1 and info.hits > hits_before   # the frame reused the prepared pattern


def test_threads_rule_cloth_from_64_squared_grids_from_97_squared():
    import os
    from metaphys.cli import _resolve_threads
    from metaphys.sims.cloth import ClothSim
    from metaphys.sims.common import threads_for_grid
    many = max(1, min(4, os.cpu_count() or 1))
    assert threads_for_grid(63, 63, cloth=True) == 1 and threads_for_grid(64, 64, cloth=True) == many
    assert threads_for_grid(96, 96) == 1 and threads_for_grid(97, 97) == many   # smoke and other grids
    assert ClothSim(64, 64).threads == many and ClothSim(48, 48).threads == 1
    # a bake's --threads auto follows the same rule, by kind
    assert _resolve_threads("auto", {"rows": 64, "cols": 64}) == many
    assert _resolve_threads("auto", {"resolution": [64, 64]}) == 1
