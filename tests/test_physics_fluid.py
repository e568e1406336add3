"""fluid_loss_grad (MAC Navier-Stokes): kernel vs twin, gradcheck, opcheck, physics, validation."""
from __future__ import annotations

import pytest
import torch

from metaphys import _ops
from metaphys.physics import fluid as F
from metaphys.physics import stencils
from physics_cases import assert_close_rel, check_thread_counts, damped_newton, opcheck, requires_kernels
from physics_cases import fluid_args as random_args  # also tests/test_cuda_fluid_cloth.py's builder

F64 = torch.float64


# --- kernel == twin ---------------------------------------------------------------------------

@requires_kernels
@pytest.mark.parametrize("size", [(1, 7, 9), (3, 16, 23), (2, 31, 17), (2, 3, 4), (1, 40, 11)])
def test_kernel_matches_twin(size):
    n, h, w = size
    args = random_args(sum(size), n, h, w)
    lk, gk = torch.ops.metaphys.fluid_loss_grad(*args)
    lt, gt = F.fluid_twin(*args)
    assert_close_rel(lk, lt, 1e-12, "loss")
    assert_close_rel(gk, gt, 1e-12, "grad")


@requires_kernels
def test_kernel_matches_twin_weights_and_thread_count():
    args = random_args(5, 2, 33, 130, weights=(0.0, 3.0, 0.0, 2.5))
    check_thread_counts("fluid_loss_grad", args, threads=(1, 2))


def _problem(seed=1, n=2, h=6, w=7):
    u, a_old, mask, bc, force, rho, mu, dt, *_ = random_args(seed, n, h, w)
    return F.FluidProblem(mask, bc, a_old=a_old, force=force, rho=rho, mu=mu, dt=dt, w_p=0.5), u


@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_gradcheck(backend, which):
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    prob, u = _problem()
    assert torch.autograd.gradcheck(prob.loss, (u.requires_grad_(True),), eps=1e-6, atol=1e-7, rtol=1e-6)


@requires_kernels
def test_opcheck():
    args = random_args(3, 2, 6, 7)
    opcheck("fluid_loss_grad", args)


# --- physics ---------------------------------------------------------------------------------

def test_velocity_of_any_potential_is_divergence_free():
    g = torch.Generator().manual_seed(0)
    u = 100 * torch.randn(3, 2, 19, 26, generator=g, dtype=F64)
    vy, vx = F.curl(u[:, :1])
    div = F.divergence(u)
    scale = float(torch.cat([vx, vy]).abs().max())
    assert float(div.abs().max()) <= 1e-14 * scale
    # ... and it is not trivially zero: the velocity is there
    assert scale > 10


def test_poiseuille_channel_flow_matches_the_analytic_profile(one_thread):
    """Low-Re channel with the Poiseuille profile on the inflow/outflow strips: the minimizer of
    the loss is the parabola everywhere and dp/dx = -8 mu U / width^2. (L9 and the MAC stencils
    are exact on this flow, so the discretization error is 0; the tolerance is the solver's.
    Two large-dt steps from rest: with the trapezoidal rule the first step lands on the steady
    state up to O(rho/dt), the second one confirms stationarity.)"""
    h, w, U, mu, rho = 16, 30, 0.5, 1.0, 0.1
    mask, bc = F.fluid_geometry(1, h, w, kind="tunnel", inflow=U, profile="parabolic")
    prob = F.FluidProblem(mask, bc, rho=rho, mu=mu, dt=1e9)
    u = prob.initial_guess()
    for _ in range(2):
        u = damped_newton(prob, u, tol=1e-14, max_iter=30, h=1e-4)
        u = prob.advance(u)
    assert float(prob.loss_and_grad(u)[0]) < 1e-18  # steady residual of the final field
    vx, vy = prob.velocity(u)
    y0, y1 = 1.5, h - 2.5  # innermost no-slip faces of the walls (face i at y = i + 1/2)
    y = torch.arange(h, dtype=F64) + 0.5
    exact = (4 * U * (y - y0) * (y1 - y) / (y1 - y0) ** 2).clamp_min(0)
    interior = slice(2, h - 3)
    for j in range(5, w - 5):  # every interior column, next to the strips included
        err = (vx[0, 0, interior, j] - exact[interior]).abs().max()
        assert float(err) < 1e-9 * U, f"column {j}: |v_x - parabola| = {float(err):.2e}"
    assert float(vy[0, 0, 3:h - 3, 5:w - 5].abs().max()) < 1e-9 * U
    p = u[0, 1, 3:h - 4, 5:w - 6]
    dpdx = stencils.dx_m(p[None, None])[..., 1:]
    want = -8 * mu * U / (y1 - y0) ** 2
    assert float((dpdx - want).abs().max()) < 1e-8 * abs(want)
    m = F.fluid_metrics(prob, u)
    assert float(m["L_p"]) < 1e-18 and float(m["L_d"]) < 1e-18


def test_lp_metric_is_the_momentum_residual_before_advance():
    prob, u = _problem(4, n=2, h=12, w=14)
    terms = prob.terms(u)
    m = F.fluid_metrics(prob, u)
    assert_close_rel(m["L_p"], terms["nav"], 1e-13, "L_p")
    steady = F.fluid_metrics(prob, u, steady=True)
    prob_steady = F.FluidProblem(prob.fields["mask"], prob.fields["bc"], a_old=u[:, :1], force=prob.fields["force"],
                                 rho=prob.fields["rho"], mu=prob.fields["mu"], dt=prob.fields["dt"])
    assert_close_rel(steady["L_p"], prob_steady.terms(u)["nav"], 1e-13, "steady L_p")
    assert not torch.allclose(steady["L_p"], m["L_p"])


def test_ld_metric_measures_the_boundary_mismatch():
    mask, bc = F.fluid_geometry(1, 20, 24, kind="tunnel", inflow=1.0, inflow_margin=5)
    prob = F.FluidProblem(mask, bc)
    zero = prob.initial_guess()
    assert float(F.fluid_metrics(prob, zero)["L_d"]) > 1e-3  # v = 0 violates the inflow
    mask0, bc0 = F.fluid_geometry(1, 20, 24, kind="box")
    prob0 = F.FluidProblem(mask0, bc0)
    u = torch.randn(1, 2, 20, 24, dtype=F64)
    assert float(F.fluid_metrics(prob0, u)["L_d"]) > 1e-3  # a random potential slips through the walls
    u[:, 0] = 0.0
    assert float(F.fluid_metrics(prob0, u)["L_d"]) == 0.0


def test_closed_box_smoke_step_conserves_density(one_thread):
    """Fluid step with buoyancy-like forcing in a closed box around an obstacle, then the density
    step (D = 0) with the interpolated velocity, solved exactly: total density is conserved."""
    n, h, w = 2, 16, 18
    mask, bc = F.fluid_geometry(n, h, w, kind="box", wall_rows=2, wall_cols=2)
    mask, bc = F.add_obstacle(mask, bc, "circle", center=(8, 9), radius=2.5)
    force = torch.zeros(n, 2, h, w, dtype=F64)
    force[:, 0, :, : w // 2] = -0.5
    force[:, 0, :, w // 2:] = 0.3
    prob = F.FluidProblem(mask, bc, force=force, rho=1.0, mu=0.2, dt=1.0)
    x = prob.initial_guess().requires_grad_(True)
    opt = torch.optim.LBFGS([x], max_iter=150, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = prob.loss(x).sum()
        loss.backward()
        return loss

    opt.step(closure)
    u = x.detach()
    vel = F.corner_velocity(prob, u)
    assert float(vel.abs().max()) > 0.05, "the fluid should move"
    g = torch.Generator().manual_seed(3)
    c_old = torch.rand(n, 1, h, w, generator=g, dtype=F64) * (1 - mask)
    dens = F.density_problem(prob, u, c_old, D=0.0, true_grad=True)
    c_new = torch.cat([damped_newton(dens.select(torch.tensor([k])), c_old[k:k + 1], tol=1e-14, max_iter=30, h=1e-4) for k in range(n)])
    assert float(dens.loss_and_grad(c_new)[0].max()) < 1e-26
    assert float((c_new - c_old).abs().max()) > 1e-2, "the density should move"
    s0, s1 = c_old.flatten(1).sum(1), c_new.flatten(1).sum(1)
    assert float(((s1 - s0) / s0).abs().max()) < 1e-10
    # interior divergence of the interpolated velocity (central differences) vanishes
    div = stencils.dx_c(vel[:, 1:2]) + stencils.dy_c(vel[:, 0:1])
    near = torch.nn.functional.max_pool2d(mask, 3, 1, 1)  # corners within one cell of a mask
    assert float((div * (1 - near)).abs().max()) < 1e-14
    assert float((vel * mask).abs().max()) == 0.0


def test_advance_keeps_the_warm_start_and_sets_a_old():
    prob, u = _problem(6)
    warm = prob.advance(u)
    assert torch.equal(warm, u)
    assert torch.equal(prob.fields["a_old"], u[:, :1])
    assert torch.equal(prob.initial_guess()[:, :1], u[:, :1])


def test_geometry_helpers():
    mask, bc = F.fluid_geometry(2, 30, 40, kind="tunnel", inflow=[1.0, -2.0])
    assert float(mask[..., :3, :].min()) == 1 and float(mask[..., 10:20, 10:30].max()) == 0
    assert torch.equal(bc[0, 1, 10:20, :5], torch.ones(10, 5, dtype=F64))
    assert torch.equal(bc[1, 1, 10:20, -5:], -2 * torch.ones(10, 5, dtype=F64))
    stale = bc.clone()
    stale[:, :, 12:18, 17:23] = 7.0  # stale wall velocities where the obstacle goes
    m2, b2 = F.add_obstacle(mask, stale, "circle", center=(15, 20), radius=3, omega=0.5)
    inside = m2[0, 0] - mask[0, 0]
    assert int(inside.sum()) == 25  # lattice points with dy^2 + dx^2 < 9
    assert float(b2[0, 1, 15, 20]) == 0.0 and float(b2[0, 0, 15, 22]) == 1.0  # v_x = -w dy, v_y = w dx
    m3, b3 = F.add_obstacle(mask, bc, "box", center=(15, 20), half=(2, 3), velocity=(0.5, -0.25))
    box = m3[0, 0] - mask[0, 0]
    assert int(box.sum()) == 5 * 7 and float(b3[1, 0, 14, 18]) == 0.5 and float(b3[1, 1, 14, 18]) == -0.25


# --- validation -------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    mask, bc = F.fluid_geometry(1, 12, 14, kind="box")
    with pytest.raises(ValueError, match="rho must be > 0"):
        F.FluidProblem(mask, bc, rho=-1.0)
    with pytest.raises(ValueError, match="mu must be finite"):
        F.FluidProblem(mask, bc, mu=float("nan"))
    with pytest.raises(ValueError, match="dt must be > 0"):
        F.FluidProblem(mask, bc, dt=0.0)
    with pytest.raises(ValueError, match="mask must contain only 0"):
        F.FluidProblem(mask * 0.5, bc)
    with pytest.raises(ValueError, match="bc must broadcast"):
        F.FluidProblem(mask, bc[:, :, :-1])
    with pytest.raises(TypeError, match="float64"):
        F.FluidProblem(mask.float(), bc)
    with pytest.raises(ValueError, match="force contains NaN"):
        F.FluidProblem(mask, bc, force=torch.full((1, 2, 12, 14), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="w_bound must be a finite number >= 0"):
        F.FluidProblem(mask, bc, w_bound=-1.0)
    with pytest.raises(ValueError, match="radius must be > 0"):
        F.add_obstacle(mask, bc, "circle", center=(5, 5), radius=0)


@requires_kernels
def test_kernel_rejects_bad_shapes():
    args = list(random_args(1, 2, 6, 7))
    op = torch.ops.metaphys.fluid_loss_grad
    bad = [(0, args[0][:, :1].contiguous(), "u must have shape"), (2, args[2][:1], "mask must have shape"),
           (3, args[3].float(), "bc must be float64"), (5, args[5][:1], "rho must have shape"),
           (9, -1.0, "w_bound must be a finite number")]
    for k, v, msg in bad:
        a = list(args)
        a[k] = v
        with pytest.raises(RuntimeError, match=msg):
            op(*a)
    with pytest.raises(RuntimeError, match="at least 3x3"):
        op(*random_args(1, 1, 2, 7))
