"""diffusion_loss_grad: physics sanity and Problem validation (the checks every grid op shares:
test_physics_grid_ops.py)."""
from __future__ import annotations

import pytest
import torch

from metaphys.physics import DiffusionProblem, frame_mask
from physics_cases import STENCILS, field, gen, random_mask



# --- physics sanity -----------------------------------------------------------------------------

@pytest.mark.parametrize("stencil", STENCILS)
def test_uniform_field_is_steady_in_a_uniform_flow(each_backend, stencil):
    """c = const with a spatially constant velocity, no source: every term of r vanishes."""
    n, h, w = 2, 14, 11
    m = frame_mask(n, h, w)
    vel = torch.tensor([0.7, -1.3], dtype=torch.float64).view(1, 2, 1, 1).expand(n, 2, h, w)
    prob = DiffusionProblem(m, 0.25, c_old=0.25, velocity=vel, D=[1.0, 0.1], dt=0.5, stencil=stencil)
    loss, grad = prob.loss_and_grad(torch.full((n, 1, h, w), 0.25, dtype=torch.float64))
    assert float(loss.max()) == 0.0 and float(grad.abs().max()) == 0.0
    loss, _ = prob.loss_and_grad(torch.full((n, 1, h, w), 0.5, dtype=torch.float64))
    assert float(loss.min()) > 1e-3


def test_reaction_only_step_is_solved_exactly(each_backend):
    """D = 0 and v = 0: r = (c - c_old)/dt - R, so c = c_old + dt*R has zero loss."""
    g = gen(21)
    n, h, w = 2, 9, 13
    m = random_mask(g, n, h, w)
    c_old, src = field(g, n, 1, h, w), field(g, n, 1, h, w)
    dt = torch.tensor([0.5, 2.0], dtype=torch.float64)
    prob = DiffusionProblem(m, 0.0, c_old=c_old, source=src, D=0.0, dt=dt)
    c = c_old + dt.view(-1, 1, 1, 1) * src
    assert float(prob.residual(c).max()) < 1e-30


@pytest.mark.parametrize("stencil", STENCILS)
def test_pseudo_gradient_formula(each_backend, stencil):
    """pseudo grad = 2/N * free * (1/dt - D*w_c + div v) * free*r (neighbours and v.grad c detached)."""
    from metaphys.physics import stencils
    g = gen(22)
    n, h, w = 2, 10, 12
    m, bc, c_old, c = random_mask(g, n, h, w), field(g, n, 1, h, w), field(g, n, 1, h, w), field(g, n, 1, h, w)
    vel = field(g, n, 2, h, w)
    D, dt = torch.tensor([0.3, 2.0], dtype=torch.float64), torch.tensor([1.0, 0.25], dtype=torch.float64)
    prob = DiffusionProblem(m, bc, c_old=c_old, velocity=vel, D=D, dt=dt, stencil=stencil)
    loss, grad = prob.loss_and_grad(c)
    free, ct = 1 - m, m * bc + (1 - m) * c
    vy, vx = vel[:, 0:1], vel[:, 1:2]
    div = stencils.dx_c(vx) + stencils.dy_c(vy)
    Dn, dtn = D.view(-1, 1, 1, 1), dt.view(-1, 1, 1, 1)
    r = (ct - prob.fields["c_old"]) / dtn - Dn * stencils.laplacian(ct, stencil) + vx * stencils.dx_c(ct) \
        + vy * stencils.dy_c(ct) + div * ct
    count = free.flatten(1).sum(1)
    torch.testing.assert_close(loss, (free * r * r).flatten(1).sum(1) / count, rtol=1e-12, atol=0)
    wc = stencils.CENTRE_WEIGHT[stencil]
    expected = 2 / count.view(-1, 1, 1, 1) * free * (1 / dtn - Dn * wc + div) * free * r
    torch.testing.assert_close(grad, expected, rtol=1e-11, atol=1e-13)


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["float32", "velocity shape", "mask 0.5", "NaN D", "negative dt", "stencil 7",
                                   "NaN velocity"])
def test_problem_rejects_bad_input(label):
    g = gen(4)
    n, h, w = 2, 6, 7
    kw = dict(c_old=field(g, n, 1, h, w), velocity=field(g, n, 2, h, w), D=1.0, dt=1.0)
    mask = random_mask(g, n, h, w)
    exc = ValueError
    if label == "float32":
        mask, exc, msg = mask.float(), TypeError, "must be torch.float64"
    elif label == "velocity shape":
        kw["velocity"], msg = kw["velocity"][:, :, :-1], "velocity must broadcast to shape"
    elif label == "mask 0.5":
        mask[0, 0, 3, 3], msg = 0.5, "mask must contain only 0"
    elif label == "NaN D":
        kw["D"], msg = [1.0, float("nan")], "D must be finite"
    elif label == "negative dt":
        kw["dt"], msg = -0.1, "dt must be > 0"
    elif label == "NaN velocity":
        kw["velocity"][1, 0, 2, 2], msg = float("nan"), "velocity contains NaN"
    else:
        kw["stencil"], msg = 7, "stencil must be 9 .* or 5, got 7"
    with pytest.raises(exc, match=msg):
        DiffusionProblem(mask, 0.0, **kw)
