"""wave_loss_grad: physics sanity and Problem validation (the checks every grid op shares:
test_physics_grid_ops.py)."""
from __future__ import annotations

import pytest
import torch

from metaphys.physics import WaveProblem, frame_mask
from physics_cases import STENCILS, field, gen, random_mask



# --- physics sanity -----------------------------------------------------------------------------

@pytest.mark.parametrize("stencil", STENCILS)
def test_linear_height_at_rest_is_steady(each_backend, stencil):
    """x = a + b*i + c*j held on the frame, at rest: the Laplacian vanishes, a = 0 solves the step."""
    n, h, w = 2, 12, 15
    i = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1)
    j = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w)
    x = (0.5 + 0.25 * i - 0.125 * j).expand(n, 1, h, w)
    prob = WaveProblem(frame_mask(n, h, w), x, x_old=x, c=[2.0, 0.5], dt=1.0, stencil=stencil)
    loss, grad = prob.loss_and_grad(prob.initial_guess())
    assert float(loss.max()) == 0.0 and float(grad.abs().max()) == 0.0


def test_zero_wave_speed_gives_free_acceleration(each_backend):
    """c = 0: r = (v_new - v_old)/dt = a on free cells, so the loss is the mean of a^2 there."""
    g = gen(31)
    n, h, w = 2, 9, 11
    m = random_mask(g, n, h, w)
    a = field(g, n, 1, h, w)
    prob = WaveProblem(m, field(g, n, 1, h, w), x_old=field(g, n, 1, h, w), v_old=field(g, n, 1, h, w), c=0.0,
                       dt=[0.5, 2.0])
    free = 1 - m
    torch.testing.assert_close(prob.residual(a), (free * a * a).flatten(1).sum(1) / free.flatten(1).sum(1),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("stencil", STENCILS)
def test_pseudo_gradient_formula(each_backend, stencil):
    """pseudo grad = 2/N * free*r * (1 - c^2 w_c dt^2 / 2) on free cells, 0 on Dirichlet cells."""
    from metaphys.physics import stencils
    from metaphys.physics.wave import wave_state_update
    g = gen(32)
    n, h, w = 2, 10, 12
    m = random_mask(g, n, h, w)
    c, dt = torch.tensor([0.7, 3.0], dtype=torch.float64), torch.tensor([1.0, 0.3], dtype=torch.float64)
    prob = WaveProblem(m, field(g, n, 1, h, w), x_old=field(g, n, 1, h, w), v_old=field(g, n, 1, h, w), c=c, dt=dt,
                       stencil=stencil)
    a = field(g, n, 1, h, w)
    _, grad = prob.loss_and_grad(a)
    fl = prob.fields
    x_new, v_new = wave_state_update(a, fl["x_old"], fl["v_old"], m, fl["bc"], dt)
    c2, dtn = (c * c).view(-1, 1, 1, 1), dt.view(-1, 1, 1, 1)
    r = (v_new - fl["v_old"]) / dtn - c2 * stencils.laplacian(0.5 * (x_new + fl["x_old"]), stencil)
    free = 1 - m
    wc = stencils.CENTRE_WEIGHT[stencil]
    expected = 2 / free.flatten(1).sum(1).view(-1, 1, 1, 1) * free * r * (1 - 0.5 * c2 * wc * dtn * dtn)
    torch.testing.assert_close(grad, expected, rtol=1e-11, atol=1e-13)


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["float32", "x_old shape", "mask 0.5", "NaN c", "negative dt", "stencil 7"])
def test_problem_rejects_bad_input(label):
    g = gen(4)
    n, h, w = 2, 6, 7
    kw = dict(x_old=field(g, n, 1, h, w), v_old=field(g, n, 1, h, w), c=1.0, dt=1.0)
    mask = random_mask(g, n, h, w)
    exc = ValueError
    if label == "float32":
        mask, exc, msg = mask.float(), TypeError, "must be torch.float64"
    elif label == "x_old shape":
        kw["x_old"], msg = kw["x_old"][:, :, :, :-1], "x_old must broadcast to shape"
    elif label == "mask 0.5":
        mask[1, 0, 3, 3], msg = 0.5, "mask must contain only 0"
    elif label == "NaN c":
        kw["c"], msg = float("nan"), "c must be finite"
    elif label == "negative dt":
        kw["dt"], msg = [1.0, -1.0], "dt must be > 0"
    else:
        kw["stencil"], msg = 7, "stencil must be 9 .* or 5, got 7"
    with pytest.raises(exc, match=msg):
        WaveProblem(mask, 0.0, **kw)
