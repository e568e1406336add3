"""SmokeSim3D (issue #28 item 3): physical units at two resolutions, no negative density, a divergence-free
flow after converged solves, state round trip, scene shapes and clear errors. Small grids (16^3-24^3: the
3-D Metamizer's smallest grid is 16^3), CPU, the shipped 3-D weights."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from metaphys.sims import SmokeSim, SmokeSim3D
from metaphys.sims.voxelize import coverage
from metaphys.spec.validate import ArgumentError


def _centroid_height(sim) -> float:
    """Height (m above the domain's floor) of the density's centre of mass."""
    d = sim.density
    w = d.sum(axis=(0, 2))
    rows = np.arange(sim.h)
    return float((w * (sim.h - 0.5 - rows)).sum() / w.sum()) * sim.units.cell_m


def test_spec_defaults_are_the_sims_defaults():
    import inspect
    from metaphys.spec.schema import SMOKE3D_SCHEMA
    sig = inspect.signature(SmokeSim3D).parameters
    for key, entry in SMOKE3D_SCHEMA.items():
        if key in sig and key not in ("resolution", "emitters", "obstacles", "iterations_per_step"):
            got = list(sig[key].default) if isinstance(entry.default, list) else sig[key].default
            assert got == entry.default, (key, got, entry.default)


def test_a_three_tuple_makes_the_3d_sim():
    sim = SmokeSim((16, 16, 16), tol=None, iterations_per_step=2)
    assert isinstance(sim, SmokeSim3D) and sim.shape == (16, 16, 16)
    assert sim.units.cell_m == pytest.approx(1 / 16)


def test_same_physical_scene_at_two_resolutions_agrees():
    """A 1 m box, a strong plume for 0.2 s, at 16^3 and 24^3 cells: the same smoke (in density x m^3),
    the same rise and speed (m, m/s) up to the discretisation."""
    scene = dict(buoyancy=12.0, emitter_density=4.0, fps=24.0, wall=2, threads=1,
                 emitters=[{"type": "sphere", "center": [0.5, 0.5, 0.3], "radius": 0.15}])
    out = {}
    for n in (16, 24):
        sim = SmokeSim3D((n, n, n), **scene)
        for _ in range(5):
            rec = sim.step()
            assert not rec.hit_cap
        mass = float(sim.total_density()[0]) * sim.units.cell_m ** 3
        out[n] = (mass, _centroid_height(sim), float(np.abs(sim.velocity).max()))
    (m1, h1, v1), (m2, h2, v2) = out[16], out[24]
    # injected smoke: 4 /s * sphere volume * 5/24 s; coverage is resolution-free to a few %
    expect = 4.0 * 4 / 3 * math.pi * 0.15 ** 3 * 5 / 24
    assert m1 == pytest.approx(expect, rel=0.05) and m2 == pytest.approx(expect, rel=0.05)
    assert abs(h1 - h2) < 0.015, (h1, h2)           # metres, in a 1 m box (measured: 4 mm)
    assert v1 > 0.05 and abs(v1 - v2) < 0.15 * max(v1, v2), (v1, v2)   # measured: 5 %


def test_density_never_negative_under_strong_forces():
    sim = SmokeSim3D((16, 16, 16), buoyancy=40.0, emitter_velocity=[1.0, 0.0, 2.0], wind=[2.0, -1.0, 0.0],
                     emitter_heat=2.0, heat_buoyancy=20.0, cfl=0.5, tol=None, iterations_per_step=8, threads=1)
    for _ in range(6):
        rec = sim.step()
        assert rec.min_density >= 0.0
    assert float(sim.density_field.min()) >= 0.0 and float(sim.temperature_field.min()) >= 0.0
    assert max(r.substeps for r in sim.records) > 1          # the forces made frames take several steps
    # walls pass nothing: the mass is what the emitter injected, to round-off
    assert float(sim.total_density()[0]) == pytest.approx(float(sim.injected[0]), rel=1e-12)


def test_flow_is_divergence_free_after_converged_solves():
    sim = SmokeSim3D((16, 16, 16), buoyancy=8.0, tol=1e-12, max_iterations=150, threads=1,
                     obstacles=[{"type": "box", "center": [0.5, 0.5, 0.65], "half_extents": [0.12, 0.12, 0.06]}])
    for _ in range(4):
        rec = sim.step()
    assert rec.converged and rec.residual <= 1e-12 and rec.iterations > 0
    div = sim.divergence()
    assert div["mac"] < 1e-12 and div["transport_interior"] < 1e-12
    assert np.abs(sim.velocity).max() > 1e-3                  # a flow, not a fluid at rest
    # the solid box holds no smoke and does not move
    solid = sim.obstacles >= 0.5
    assert solid.any() and np.all(sim.density[solid] == 0) and np.all(sim.velocity[solid] == 0)


def test_state_round_trip_continues_bit_for_bit():
    kw = dict(emitter_heat=1.0, tol=None, iterations_per_step=6, threads=1)
    a = SmokeSim3D((16, 16, 16), **kw)
    a.run(3)
    b = SmokeSim3D((16, 16, 16), **kw)
    b.run(1)
    buf = io.BytesIO()
    torch.save(b.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)                 # tensors and plain values only
    c = SmokeSim3D((16, 16, 16), **kw)
    c.load_state_dict(saved)
    c.run(2)
    assert c.frame == 3 and np.array_equal(c.density, a.density) and np.array_equal(c.velocity, a.velocity)
    assert np.array_equal(c.temperature, a.temperature)
    assert [r.as_dict() for r in c.records] == [r.as_dict() for r in a.records]
    with pytest.raises(ValueError, match="u"):
        SmokeSim3D((16, 16, 24), **kw).load_state_dict(saved)


def test_shape_coverage_is_resolution_free():
    sphere = [{"type": "sphere", "center": [0.5, 0.5, 0.5], "radius": 0.2}]
    exact = 4 / 3 * math.pi * 0.2 ** 3
    for n in (16, 24):
        cov = coverage(sphere, (n, n, n), 1.0 / n)
        assert cov.min() >= 0 and cov.max() <= 1
        assert cov.sum() / n ** 3 == pytest.approx(exact, rel=0.03)
    box = [{"type": "box", "center": [0.5, 0.25, 0.75], "half_extents": [0.25, 0.125, 0.125]}]
    cov = coverage(box, (16, 16, 16), 1.0 / 16)
    assert cov.sum() == pytest.approx(8 * 4 * 4)              # cell-aligned: exactly 8 x 4 x 4 cells
    # world axes: x = column, y = depth, z = up (row 0 = top)
    k, i, j = np.nonzero(cov)
    assert (j.min(), j.max(), k.min(), k.max()) == (4, 11, 2, 5) and (i.min(), i.max()) == (2, 5)


def test_mesh_emitters_voxelize_like_the_solid():
    trimesh = pytest.importorskip("trimesh")
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.2)
    mesh = [{"type": "mesh", "center": [0.5, 0.5, 0.5], "vertices": ball.vertices, "faces": ball.faces}]
    sphere = [{"type": "sphere", "center": [0.5, 0.5, 0.5], "radius": 0.2}]
    a, b = coverage(mesh, (16, 16, 16), 1 / 16), coverage(sphere, (16, 16, 16), 1 / 16)
    assert a.sum() == pytest.approx(b.sum(), rel=0.03) and np.abs(a - b).max() < 0.2
    sim = SmokeSim3D((16, 16, 16), emitters=mesh, obstacles=[], tol=None, iterations_per_step=1, threads=1)
    assert np.allclose(sim.emitters, a)


@pytest.mark.parametrize("kwargs, match", [
    (dict(resolution=(16, 16)), r"SmokeSim3D\(resolution=\.\.\.\): expected a list of 3 integers"),
    (dict(resolution=(8, 16, 16)), r"resolution=\.\.\.\): expected a list of 3 integers >= 16"),
    (dict(emitters=np.ones((16, 16))), r"emitters=\.\.\.\): expected a list of shapes or an array of shape \[16, 16, 16\]"),
    (dict(obstacles=np.full((16, 16, 16), 2.0)), r"obstacles=\.\.\.\): expected values in \[0, 1\]"),
    (dict(emitters=[{"type": "cone", "center": [0, 0, 0]}]), r"emitters\[0\]\.type"),
    (dict(emitters=[{"type": "sphere", "center": [0, 0, 0], "radius": -1}]), r"emitters\[0\]\.radius"),
    (dict(emitters=[{"type": "mesh", "center": [0, 0, 0], "vertices": np.zeros((4, 3)),
                     "faces": [[0, 1, 9]] * 4}]), r"emitters\[0\]\.faces: expected vertex indices < 4"),
    (dict(wind=[0, 1]), r"wind=\.\.\.\): expected a list of 3 numbers"),
    (dict(wall=7), r"wall=\.\.\.\): expected walls that leave room"),
    (dict(obstacle_shapes=[]), r"obstacle_shapes=\.\.\.\): a 2-D key"),
    (dict(fps="24"), r"fps=\.\.\.\): expected a number"),
])
def test_bad_input_is_refused_clearly(kwargs, match):
    args = {"resolution": (16, 16, 16), **kwargs}
    with pytest.raises(ArgumentError, match=match):
        SmokeSim3D(args.pop("resolution"), tol=None, iterations_per_step=1, **args)


def test_a_2d_network_is_refused():
    from metaphys.optim.metamizer import Metamizer, MetamizerNet
    with pytest.raises(ValueError, match="needs a 3-D Metamizer network.*2-D"):
        SmokeSim3D((16, 16, 16), optimizer=Metamizer(MetamizerNet(hidden=4)))
