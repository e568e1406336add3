"""burgers_loss_grad: periodic kernel, physics and Problem validation (the checks every grid op shares:
test_physics_grid_ops.py)."""
from __future__ import annotations

import pytest
import torch

from metaphys.physics import BurgersProblem
from physics_cases import GRAD_MODES, STENCILS, field, gen, random_mask, requires_kernels

OP = "burgers_loss_grad"


@requires_kernels
@pytest.mark.parametrize("true_grad", GRAD_MODES)
def test_kernel_matches_twin_without_frame(true_grad):
    """Free cells on the grid border: the periodic wrap of the kernel is what the twin's circular pad does."""
    from physics_cases import OPS, assert_close_rel, burgers_args
    twin, _ = OPS[OP]
    args = burgers_args(gen(301), (2, 1, 13, 10), frame=0) + (9, true_grad)
    lk, gk = torch.ops.metaphys.burgers_loss_grad(*args)
    lt, gt = twin(*args)
    assert_close_rel(lk, lt, 1e-12, "loss")
    assert_close_rel(gk, gt, 1e-12, "grad")


# --- physics sanity -----------------------------------------------------------------------------

@pytest.mark.parametrize("stencil", STENCILS)
def test_uniform_flow_is_steady_on_the_torus(each_backend, stencil):
    """No Dirichlet cells, periodic grid: a uniform flow has no advection or diffusion, r = 0."""
    n, h, w = 2, 8, 11
    v = torch.tensor([0.75, -1.5], dtype=torch.float64).view(1, 2, 1, 1).expand(n, 2, h, w).contiguous()
    prob = BurgersProblem(torch.zeros(n, 1, h, w, dtype=torch.float64), 0.0, v_old=v, mu=0.3, stencil=stencil)
    loss, grad = prob.loss_and_grad(v)
    assert float(loss.max()) == 0.0 and float(grad.abs().max()) == 0.0


@pytest.mark.parametrize("true_grad", GRAD_MODES)
def test_periodic_shift_equivariance(each_backend, true_grad):
    """Rolling every input on the torus rolls the gradient and keeps the loss (no preferred border)."""
    g = gen(33)
    n, h, w = 2, 9, 12
    m = random_mask(g, n, h, w, frame=0, p_interior=0.2)
    bc, v_old, v = field(g, n, 2, h, w), field(g, n, 2, h, w), field(g, n, 2, h, w)
    kw = dict(mu=[0.3, 2.0], dt=[1.0, 0.5], true_grad=true_grad)
    loss, grad = BurgersProblem(m, bc, v_old=v_old, **kw).loss_and_grad(v)

    def roll(t):
        return torch.roll(t, shifts=(4, -5), dims=(2, 3)).contiguous()

    loss2, grad2 = BurgersProblem(roll(m), roll(bc), v_old=roll(v_old), **kw).loss_and_grad(roll(v))
    torch.testing.assert_close(loss2, loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad2, roll(grad), rtol=1e-10, atol=1e-12)


def test_one_dimensional_reduction(each_backend):
    """v_1 = 0 and u independent of the row: the y-equation is satisfied and r_u is the 1-D Burgers residual."""
    n, h, w = 1, 6, 16
    x = torch.arange(w, dtype=torch.float64)
    u = torch.sin(2 * torch.pi * x / w).view(1, 1, 1, w).expand(n, 1, h, w)
    u_old = torch.cos(2 * torch.pi * x / w).view(1, 1, 1, w).expand(n, 1, h, w)
    v = torch.cat([u, torch.zeros_like(u)], 1).contiguous()
    v_old = torch.cat([u_old, torch.zeros_like(u)], 1).contiguous()
    mu, dt = 0.3, 0.5
    loss = BurgersProblem(torch.zeros(n, 1, h, w, dtype=torch.float64), 0.0, v_old=v_old, mu=mu, dt=dt).residual(v)
    u1, u0 = u[0, 0, 0], u_old[0, 0, 0]
    up, um = torch.roll(u1, -1), torch.roll(u1, 1)
    # 9-point Laplacian of a row-constant field = the 1-D second difference (weights 1/4+1/2+1/4)
    r = (u1 - u0) / dt + u1 * 0.5 * (up - um) - mu * (up - 2 * u1 + um)
    torch.testing.assert_close(loss, (r * r).sum().view(1) * h / (2 * h * w), rtol=1e-12, atol=0)


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["float32", "bc channels", "mask 0.5", "NaN mu", "negative dt", "stencil 7"])
def test_problem_rejects_bad_input(label):
    g = gen(4)
    n, h, w = 2, 6, 7
    kw = dict(v_old=field(g, n, 2, h, w), mu=0.3, dt=1.0)
    mask, bc = random_mask(g, n, h, w), 0.0
    exc = ValueError
    if label == "float32":
        mask, exc, msg = mask.float(), TypeError, "must be torch.float64"
    elif label == "bc channels":
        bc, msg = field(g, n, 3, h, w), "bc must broadcast to shape"
    elif label == "mask 0.5":
        mask[1, 0, 3, 3], msg = 0.5, "mask must contain only 0"
    elif label == "NaN mu":
        kw["mu"], msg = [0.3, float("nan")], "mu must be finite"
    elif label == "negative dt":
        kw["dt"], msg = -1.0, "dt must be > 0"
    else:
        kw["stencil"], msg = 7, "stencil must be 9 .* or 5, got 7"
    with pytest.raises(exc, match=msg):
        BurgersProblem(mask, bc, **kw)
