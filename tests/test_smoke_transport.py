"""The smoke's density transport (physics.fluid.transport): never negative for any velocity and step,
mass kept to round-off (walls pass nothing), a bump carried by a uniform flow arrives where it should
without new extrema, diffusion spreads it at the given rate."""
import numpy as np
import pytest
import torch

from metaphys.physics.fluid import (FluidProblem, corner_velocity, face_velocities, fluid_geometry, transport,
                                    transport_rate_bound)

F64 = torch.float64


def box(n=32, wall=2):
    mask, _ = fluid_geometry(1, n, n, kind="box", wall_rows=wall, wall_cols=wall)
    return mask


def bump(n, row, col, width=3.0):
    ii, jj = np.mgrid[0:n, 0:n]
    return torch.as_tensor(np.exp(-((ii - row) ** 2 + (jj - col) ** 2) / (2 * width ** 2)), dtype=F64).view(1, 1, n, n)


def swirl(mask, strength=3.0, seed=0):
    """A rough divergence-free flow: the corner velocity of a random vector potential."""
    torch.manual_seed(seed)
    n = mask.shape[-1]
    a = strength * torch.randn(1, 1, n, n, dtype=F64)
    return corner_velocity(FluidProblem(mask), torch.cat([a, torch.zeros_like(a)], 1), which="new")


@pytest.mark.parametrize("dt", [0.1, 1.0, 7.0])
def test_never_negative_and_mass_is_kept(dt):
    mask = box()
    mask[..., 12:16, 10:20] = 1                            # an obstacle inside
    c = (torch.rand(1, 1, 32, 32, dtype=F64) > 0.6).to(F64) * (1 - mask)  # hard edges: the worst case
    source = 0.1 * bump(32, 24, 16) * (1 - mask)
    out, k = transport(c, swirl(mask), mask, dt, D=0.05, source=source)
    assert float(out.min()) >= 0.0
    assert float(out.sum()) == pytest.approx(float(c.sum() + dt * source.sum()), rel=1e-12)
    assert float((out * mask).abs().max()) == 0.0          # nothing enters walls or the obstacle
    assert k >= 1 and dt / k * transport_rate_bound(face_velocities(swirl(mask), mask), 0.05) <= 1.0 + 1e-12


def test_a_uniform_flow_carries_a_bump_without_new_extrema():
    n = 64
    mask = box(n)
    vel = torch.zeros(1, 2, n, n, dtype=F64)
    vel[:, 1] = 0.8 * (1 - mask[:, 0])                     # 0.8 cells per time unit along the columns
    c0 = bump(n, 32, 20) * (1 - mask)
    c, k = transport(c0, vel, mask, 20.0)                  # 16 cells to the right
    assert k >= 32                                         # 2 * outflow * dt = 32 sub-steps at least
    col = float((c.sum(dim=(0, 1, 2)) * torch.arange(n, dtype=F64)).sum() / c.sum())
    assert col == pytest.approx(36.0, abs=0.05)            # the centre of mass moved exactly 16 cells
    assert 0.0 <= float(c.min()) and float(c.max()) <= float(c0.max())   # limited: no overshoot
    assert float(c.max()) > 0.8 * float(c0.max())          # and not smeared flat (MUSCL, not upwind)


def test_diffusion_spreads_at_its_rate():
    n = 64
    mask = box(n)
    c0 = bump(n, 32, 32, width=2.0)
    D, t = 0.5, 4.0
    c, _ = transport(c0, torch.zeros(1, 2, n, n, dtype=F64), mask, t, D=D)
    ii = torch.arange(n, dtype=F64).view(n, 1)

    def row_variance(x):
        w = x[0, 0].sum(1)
        m = (w * ii[:, 0]).sum() / w.sum()
        return float((w * (ii[:, 0] - m) ** 2).sum() / w.sum())

    assert row_variance(c) - row_variance(c0) == pytest.approx(2 * D * t, rel=0.02)
    assert float(c.sum()) == pytest.approx(float(c0.sum()), rel=1e-12)


def test_a_flow_the_grid_cannot_carry_is_refused():
    mask = box()
    with pytest.raises(ValueError, match=r"the transport would need \S+ sub-steps \(more than 10\)"):
        transport(torch.zeros(1, 1, 32, 32, dtype=F64), swirl(mask, 100.0), mask, 1.0, max_substeps=10)
