"""ClothSim with the shipped weights: sagging, PC2 round trip, colliders, tolerance dial, bad input."""
import numpy as np
import pytest

from metaphys.io import pc2
from metaphys.sims.cloth import ClothSim, flat_cloth


def _sim(opt, **kw):
    base = dict(rows=32, cols=32, size_m=1.0, iterations_per_step=20, optimizer=opt, colliders=[])
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


def test_cloth_on_sphere_does_not_penetrate(shipped_optimizer):
    radius = 0.3
    center = np.array([0.0, 0.0, 0.5])
    sim = _sim(shipped_optimizer, pin_weights=np.zeros(1024), colliders=[{"type": "sphere", "center": center,
                                                                         "radius": radius}],
               rest_positions=flat_cloth(32, 32, 1.0, height=0.9), iterations_per_step=30)
    tolerance = sim.length_unit * sim.problem.fields["margin"].item()  # contact margin in metres
    worst = 0.0
    for _ in range(14):
        sim.step()
        d = np.linalg.norm(sim.positions.reshape(-1, 3) - center, axis=1) - radius
        worst = min(worst, float(d.min()))
    assert worst > -tolerance, f"penetration {-worst:.4f} m exceeds the contact tolerance {tolerance:.4f} m"
    # and it rests on the sphere: the top of the cloth is near the sphere's top
    assert sim.positions[..., 2].max() < 0.9


def test_tolerance_dial_is_met_or_reports_cap(shipped_optimizer):
    sim = _sim(shipped_optimizer, iterations_per_step=None, tol=1e-6, max_iterations=40)
    for _ in range(4):
        rec = sim.step()
        assert rec.residual <= 1e-6 or rec.hit_cap
        assert rec.iterations <= 40


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=8, cols=16), "at least|>= 16"),
    (dict(pin_weights=np.full(1024, 1.5)), r"pin_weights must be in \[0, 1\]"),
    (dict(pin_weights=np.ones(10)), "rows\\*cols = 1024"),
    (dict(gravity=(0, 0, float("nan"))), "gravity must be finite"),
    (dict(stretch=-1.0), "stretch must be >= 0"),
    (dict(colliders=[{"type": "cone", "center": [0, 0, 0]}]), "sphere' or 'box"),
    (dict(colliders=[{"type": "sphere", "center": [0, 0, 0], "radius": -1}]), "radius must be > 0"),
    (dict(iterations_per_step=0), "iterations_per_step must be >= 1"),
])
def test_bad_parameters_fail_fast(shipped_optimizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _sim(shipped_optimizer, **kwargs)
