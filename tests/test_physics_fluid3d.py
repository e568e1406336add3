"""fluid3d_loss_grad (3-D MAC Navier-Stokes, issue #28 item 1): kernel vs twin, gradcheck, opcheck, the
curl's zero divergence, consistency with the 2-D op along each axis, a hydrostatic state, the 3-D smoke
pieces (buoyancy, node velocity, monotone transport) and validation. CUDA: tests/test_cuda_fluid_cloth.py."""
from __future__ import annotations

import math

import pytest
import torch

from metaphys import _ops
from metaphys.physics import fluid as F2
from metaphys.physics import fluid3d as F3
from physics_cases import assert_close_rel, check_thread_counts, fluid3d_args, fluid_args, opcheck, requires_kernels

F64 = torch.float64
OP = "fluid3d_loss_grad"


def kernel(*args):
    return torch.ops.metaphys.fluid3d_loss_grad(*args)


# --- kernel == twin ---------------------------------------------------------------------------

@requires_kernels
@pytest.mark.parametrize("size", [(1, 5, 7, 9), (3, 6, 8, 11), (2, 3, 3, 4), (1, 12, 4, 17), (2, 9, 10, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_twin(size):
    n, d, h, w = size
    args = fluid3d_args(sum(size), n, h, w, d=d)
    cf, _ = F3.face_conditions(args[2], args[3])
    if min(size[1:]) >= 5:  # the random obstacles make interior Dirichlet faces of every orientation
        assert all(bool(cf[:, c, 1:-1, 1:-1, 1:-1].any()) for c in range(3))
    lk, gk = kernel(*args)
    lt, gt = F3.fluid3d_twin(*args)
    assert_close_rel(lk, lt, 1e-12, "loss")
    assert_close_rel(gk, gt, 1e-12, "grad")


@requires_kernels
def test_kernel_matches_twin_weights_and_thread_count():
    for weights in ((0.0, 3.0, 0.0, 2.5), (1.0, 0.0, 0.7, 0.0)):
        args = fluid3d_args(5, 2, 21, 40, d=13, weights=weights)
        check_thread_counts(OP, args, threads=(1, 2))


def _problem(seed=1, n=1, d=6, h=7, w=8):
    u, a_old, mask, bc, force, rho, mu, dt, *_ = fluid3d_args(seed, n, h, w, d=d)
    return F3.Fluid3DProblem(mask, bc, a_old=a_old, force=force, rho=rho, mu=mu, dt=dt, w_p=0.5), u


@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_gradcheck(backend, which):
    """Problem.loss (autograd through the op's gradient output) against central differences, 6x7x8."""
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    prob, u = _problem()
    assert torch.autograd.gradcheck(prob.loss, (u.requires_grad_(True),), eps=1e-6, atol=1e-7, rtol=1e-6,
                                    fast_mode=(which == "twin"))


def test_twin_gradient_is_the_gradient_of_its_terms():
    """The twin's gradient is d/du of the weighted sum of the terms ``terms`` reports (a directional
    derivative by central differences, independent of autograd)."""
    prob, u = _problem(seed=4, n=2, d=5, h=6, w=7)
    loss, grad = F3.fluid3d_twin(u, *prob.op_args())
    t = prob.terms(u)
    w = prob.weights
    total = w["w_nav"] * t["nav"] + w["w_bound"] * t["bound"] + w["w_a"] * t["gauge_a"] + w["w_p"] * t["gauge_p"]
    assert_close_rel(loss, total, 1e-14, "loss = weighted terms")
    direction = torch.randn(u.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    h = 1e-6
    fd = (F3.fluid3d_twin(u + h * direction, *prob.op_args())[0]
          - F3.fluid3d_twin(u - h * direction, *prob.op_args())[0]) / (2 * h)
    exact = (grad * direction).flatten(1).sum(1)
    assert torch.allclose(fd, exact, rtol=1e-7, atol=1e-7 * float(exact.abs().max()))


@requires_kernels
def test_opcheck():
    opcheck(OP, fluid3d_args(3, 2, 6, 7, d=5))


# --- the discrete curl ---------------------------------------------------------------------------

def test_velocity_of_any_potential_is_divergence_free():
    g = torch.Generator().manual_seed(0)
    u = 100 * torch.randn(2, 4, 9, 11, 13, generator=g, dtype=F64)
    v = F3.curl(u[:, :3])
    assert float(v.abs().max()) > 100  # not trivially zero
    assert float(F3.divergence(u).abs().max()) < 1e-12 * float(v.abs().max())
    # and a gradient field a = grad(phi) (edges from nodes) has no velocity: the gauge freedom
    phi = torch.randn(1, 1, 9, 11, 13, generator=g, dtype=F64)
    grad_phi = torch.cat([F3.shift(phi, F3.E[c]) - phi for c in range(3)], dim=1)
    interior = F3.curl(grad_phi)[..., :-1, :-1, :-1]  # the last layers read the zero padding
    assert float(interior.abs().max()) < 1e-13


# --- consistency with the 2-D op -----------------------------------------------------------------

def _embed(x2: torch.Tensor, axis: int, layers: int) -> torch.Tensor:
    """A 2-D field [N,C,R,K] repeated along 3-D ``axis`` (0 z, 1 y, 2 x): 2-D rows become axis + 1 and
    2-D columns axis + 2 (mod 3), the cyclic order in which the 2-D curl is the 3-D one."""
    n, c, r, k = x2.shape
    t = x2.unsqueeze(2).expand(n, c, layers, r, k)  # dims (axis, rows axis, cols axis)
    where = {axis: 2, (axis + 1) % 3: 3, (axis + 2) % 3: 4}
    return t.permute(0, 1, where[0], where[1], where[2]).contiguous()


def _collapse(x3: torch.Tensor, axis: int) -> torch.Tensor:
    """[N,D,H,W] summed along ``axis``, as the 2-D [N, rows, cols] of ``_embed``."""
    rows, cols = (axis + 1) % 3, (axis + 2) % 3
    return x3.permute(0, 1 + axis, 1 + rows, 1 + cols).sum(1)


def _embed_state(args2, axis: int, layers: int):
    """The 3-D arguments of a 2-D fluid state invariant along ``axis``: the 2-D potential becomes a_axis,
    the 2-D (v_rows, v_cols) channels of bc and force the 3-D channels of the rows and cols axes."""
    u2, a_old2, mask2, bc2, force2, rho, mu, dt, w_nav, w_bound, w_a, w_p = args2
    rows, cols = (axis + 1) % 3, (axis + 2) % 3

    def potential(a2):
        out = torch.zeros(a2.shape[0], 3, *_embed(a2, axis, layers).shape[2:], dtype=F64)
        out[:, axis:axis + 1] = _embed(a2, axis, layers)
        return out

    def vector(x2):
        out = torch.zeros(x2.shape[0], 3, *_embed(x2[:, :1], axis, layers).shape[2:], dtype=F64)
        out[:, rows:rows + 1] = _embed(x2[:, 0:1], axis, layers)
        out[:, cols:cols + 1] = _embed(x2[:, 1:2], axis, layers)
        return out

    u3 = torch.cat([potential(u2[:, 0:1]), _embed(u2[:, 1:2], axis, layers)], dim=1)
    return (u3, potential(a_old2), _embed(mask2, axis, layers), vector(bc2), vector(force2), rho, mu, dt,
            w_nav, w_bound, w_a, w_p)


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["z", "y", "x"])
def test_an_invariant_state_is_the_2d_problem(axis):
    """A state invariant along any axis is the 2-D problem in every layer: nav and both gauges equal, the
    boundary term is 2/3 of the 2-D one (3 channels instead of 2), and the 3-D gradient summed along the
    axis is the 2-D gradient (the 3-D loss of the embedded state is the 2-D loss with w_bound * 2/3)."""
    args2 = fluid_args(7 + axis, 2, 9, 11)
    args3 = _embed_state(args2, axis, layers=6)
    t2 = F2.fluid_terms(*args2[:8])
    t3 = F3.fluid3d_terms(*args3[:8])
    assert float(t2["nav"].min()) > 1 and float(t2["bound"].min()) > 1e-3  # every term is active
    assert_close_rel(t3["nav"], t2["nav"], 1e-12, "nav")
    assert_close_rel(t3["bound"], t2["bound"] * (2 / 3), 1e-12, "bound")
    assert_close_rel(t3["gauge_a"], t2["gauge_a"], 1e-12, "gauge a")
    assert_close_rel(t3["gauge_p"], t2["gauge_p"], 1e-12, "gauge p")
    w_nav, w_bound, w_a, w_p = args2[8:]
    l2, g2 = F2.fluid_twin(*args2[:8], w_nav, w_bound * 2 / 3, w_a, w_p)
    ops = [F3.fluid3d_twin] + ([kernel] if _ops.kernels_available() else [])
    for op in ops:
        l3, g3 = op(*args3)
        assert_close_rel(l3, l2, 1e-12, f"loss {op.__name__}")
        assert_close_rel(_collapse(g3[:, axis], axis), g2[:, 0], 1e-12, f"grad a {op.__name__}")
        assert_close_rel(_collapse(g3[:, 3], axis), g2[:, 1], 1e-12, f"grad p {op.__name__}")


def test_hydrostatic_balance_has_zero_momentum_residual():
    """At rest with a linear pressure, the pressure gradient balances a uniform force exactly (each axis
    with its own slope: a sign or axis mix-up of D^-_c p or f_c shows); a different force does not."""
    n, d, h, w = 1, 6, 7, 8
    kk, ii, jj = torch.meshgrid(*(torch.arange(s, dtype=F64) for s in (d, h, w)), indexing="ij")
    slopes = (0.3, -1.1, 0.7)
    p = (slopes[0] * kk + slopes[1] * ii + slopes[2] * jj).view(1, 1, d, h, w)
    u = torch.cat([torch.zeros(n, 3, d, h, w, dtype=F64), p], dim=1)
    mask = torch.zeros(n, 1, d, h, w, dtype=F64)
    force = torch.stack([torch.full((d, h, w), s, dtype=F64) for s in slopes]).unsqueeze(0)
    prob = F3.Fluid3DProblem(mask, a_old=0.0, force=force, rho=2.0, mu=0.5, dt=0.5)
    assert float(prob.terms(u)["nav"]) < 1e-28
    swapped = F3.Fluid3DProblem(mask, force=force.flip(1), rho=2.0, mu=0.5, dt=0.5)
    assert float(swapped.terms(u)["nav"]) > 0.1


def test_lap27_collapses_to_the_2d_laplacian_and_kills_linear_fields():
    g = torch.Generator().manual_seed(2)
    x2 = torch.randn(1, 1, 8, 9, generator=g, dtype=F64)
    x3 = _embed(x2, 0, 5)
    from metaphys.physics import stencils
    want = stencils.laplacian(x2, 9)
    assert_close_rel(F3.lap27(x3)[:, :, 1:-1], _embed(want, 0, 5)[:, :, 1:-1], 1e-14, "z-collapse")
    kk, ii, jj = torch.meshgrid(*(torch.arange(s, dtype=F64) for s in (6, 7, 8)), indexing="ij")
    quad = (kk ** 2 + ii ** 2 + jj ** 2).view(1, 1, 6, 7, 8)  # Laplacian 6
    lin = (2 * kk - ii + 3 * jj).view(1, 1, 6, 7, 8)
    assert torch.allclose(F3.lap27(quad)[..., 1:-1, 1:-1, 1:-1], torch.full((4, 5, 6), 6.0, dtype=F64))
    assert float(F3.lap27(lin)[..., 1:-1, 1:-1, 1:-1].abs().max()) < 1e-13


# --- problem protocol and validation ----------------------------------------------------------

def test_problem_protocol():
    prob, u = _problem(n=2)
    assert prob.shape == tuple(u.shape) == (2, 4, 6, 7, 8)
    loss, grad = prob.loss_and_grad(u)
    assert loss.shape == (2,) and grad.shape == u.shape
    u0 = prob.initial_guess()
    assert torch.equal(u0[:, :3], prob.fields["a_old"]) and float(u0[:, 3].abs().max()) == 0
    nxt = prob.advance(u)
    assert torch.equal(prob.fields["a_old"], u[:, :3]) and torch.equal(nxt, u)
    sub = prob.select(torch.tensor([1]))
    assert_close_rel(sub.loss_and_grad(u[1:])[0], prob.loss_and_grad(u)[0][1:], 1e-14, "select")


def test_bad_inputs_raise_clear_errors():
    mask, bc = F3.box_geometry(1, 9, 10, 11)
    with pytest.raises(ValueError, match="rho must be > 0"):
        F3.Fluid3DProblem(mask, bc, rho=-1.0)
    with pytest.raises(ValueError, match="dt must be > 0"):
        F3.Fluid3DProblem(mask, bc, dt=0.0)
    with pytest.raises(ValueError, match="mask must contain only 0"):
        F3.Fluid3DProblem(mask * 0.5, bc)
    with pytest.raises(ValueError, match="bc must broadcast"):
        F3.Fluid3DProblem(mask, bc[:, :, :-1])
    with pytest.raises(ValueError, match="mask must have 5 dimensions"):
        F3.Fluid3DProblem(mask[:, :, 0])
    with pytest.raises(TypeError, match="float64"):
        F3.Fluid3DProblem(mask.float(), bc)
    with pytest.raises(ValueError, match="force contains NaN"):
        F3.Fluid3DProblem(mask, bc, force=torch.full((1, 3, 9, 10, 11), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="at least 3x3x3"):
        F3.Fluid3DProblem(torch.zeros(1, 1, 2, 5, 5, dtype=F64))


@requires_kernels
def test_kernel_rejects_bad_shapes():
    args = list(fluid3d_args(1, 2, 6, 7, d=5))
    bad = [(0, args[0][:, :3].contiguous(), "u must have shape"), (0, args[0][:, :, 0].contiguous(), "5 dimensions"),
           (2, args[2][:1], "mask must have shape"), (3, args[3].float(), "bc must be float64"),
           (4, args[4].transpose(3, 4), "force must be contiguous"), (5, args[5][:1], "rho must have shape"),
           (9, -1.0, "w_bound must be a finite number")]
    for k, v, msg in bad:
        a = list(args)
        a[k] = v
        with pytest.raises(RuntimeError, match=msg):
            kernel(*a)
    with pytest.raises(RuntimeError, match="at least 3x3x3"):
        kernel(*fluid3d_args(1, 1, 5, 6, d=2))


# --- smoke in 3-D: buoyancy, node velocity, transport ---------------------------------------------

def _swirl(mask, strength=2.0, seed=0):
    """A rough divergence-free flow: the node velocity of a random potential."""
    g = torch.Generator().manual_seed(seed)
    a = strength * torch.randn(1, 3, *mask.shape[2:], generator=g, dtype=F64)
    prob = F3.Fluid3DProblem(mask)
    return F3.node_velocity(prob, torch.cat([a, torch.zeros_like(a[:, :1])], 1), which="new")


def test_node_velocity_is_divergence_free_inside():
    mask = torch.zeros(1, 1, 9, 10, 11, dtype=F64)
    vel = _swirl(mask, 10.0)
    div = sum(0.5 * (F3.shift(vel[:, c:c + 1], F3.E[c]) - F3.shift(vel[:, c:c + 1], tuple(-x for x in F3.E[c])))
              for c in range(3))
    assert float(vel.abs().max()) > 5
    assert float(div[..., 2:-2, 2:-2, 2:-2].abs().max()) < 1e-12 * float(vel.abs().max())


def test_buoyancy_of_an_invariant_field_is_the_2d_smoke_force():
    g = torch.Generator().manual_seed(3)
    lift2 = torch.rand(1, 1, 8, 9, generator=g, dtype=F64)
    f3 = F3.buoyancy_force(_embed(lift2, 0, 5))
    lift_y = 0.5 * (lift2 + torch.nn.functional.pad(lift2, (0, 1))[..., 1:])  # SmokeSim._forces' v_y faces
    assert_close_rel(f3[:, 1, :-1], -_embed(lift_y, 0, 4)[:, 0], 1e-15, "f_y")
    assert float(f3[:, 0].abs().max()) == 0 and float(f3[:, 2].abs().max()) == 0
    up_z = F3.buoyancy_force(_embed(lift2, 0, 5), up=(1.0, 0.0, 0.0))
    assert float(up_z[:, 0].min()) >= 0 and float(up_z[:, 1].abs().max()) == 0


def test_transport_of_an_invariant_field_is_the_2d_transport():
    """z-invariant smoke between two z walls: every inner layer is carried exactly as the 2-D transport
    carries the 2-D field (z fluxes vanish, the sub-step count is the same)."""
    n2 = 14
    mask2, _ = F2.fluid_geometry(1, n2, n2, kind="box", wall_rows=2, wall_cols=2)
    mask2[..., 5:8, 6:9] = 1
    g = torch.Generator().manual_seed(5)
    a2 = 2.0 * torch.randn(1, 1, n2, n2, generator=g, dtype=F64)
    vel2 = F2.corner_velocity(F2.FluidProblem(mask2), torch.cat([a2, torch.zeros_like(a2)], 1), which="new")
    c2 = torch.rand(1, 2, n2, n2, generator=g, dtype=F64) * (1 - mask2)
    want, k2 = F2.transport(c2, vel2, mask2, 1.5)
    layers = 5
    mask3 = _embed(mask2, 0, layers)
    mask3[..., 0, :, :] = 1
    mask3[..., -1, :, :] = 1
    a3 = torch.zeros(1, 3, layers, n2, n2, dtype=F64)
    a3[:, 0:1] = _embed(a2, 0, layers)
    vel3 = F3.node_velocity(F3.Fluid3DProblem(mask3), torch.cat([a3, torch.zeros_like(a3[:, :1])], 1), which="new")
    c3 = _embed(c2, 0, layers) * (1 - mask3)
    got, k3 = F3.transport(c3, vel3, mask3, 1.5)
    assert k3 == k2 > 1
    for k in range(1, layers - 1):
        assert_close_rel(got[:, :, k], want, 1e-13, f"layer {k}")
    assert float(got[:, :, 0].abs().max()) == 0


@pytest.mark.parametrize("dt", [0.3, 4.0])
def test_transport_is_monotone_and_keeps_mass(dt):
    mask, _ = F3.box_geometry(1, 12, 13, 14, wall=2)
    mask[..., 5:7, 5:8, 6:9] = 1  # an obstacle
    g = torch.Generator().manual_seed(1)
    c = (torch.rand(1, 2, 12, 13, 14, generator=g, dtype=F64) > 0.6).to(F64) * (1 - mask)  # hard edges
    source = torch.zeros_like(c)
    source[:, :, 8, 8, 8] = 0.5
    vel = _swirl(mask)
    out, k = F3.transport(c, vel, mask, dt, D=0.05, source=source)
    assert k >= 1 and float(out.min()) >= 0.0
    assert torch.allclose(out.flatten(2).sum(2), c.flatten(2).sum(2) + dt * source.flatten(2).sum(2), rtol=1e-12)
    assert float((out * mask).abs().max()) == 0.0
    bound = F3.transport_rate_bound(F3.face_velocities(vel, mask), 0.05)
    assert dt / k * bound <= 1.0 + 1e-12


@requires_kernels
def test_a_buoyant_blob_rises_and_its_density_follows(one_thread):
    """One 3-D smoke step end to end: the buoyancy of a density blob in a closed box (up = -rows),
    one fluid step solved (L-BFGS on the kernel), then the density carried by the step's velocity: the
    flow at the blob points up, and the density's centre of mass moves up while its mass is kept."""
    n = 12
    mask, bc = F3.box_geometry(1, n, n, n, wall=3)
    kk, ii, jj = torch.meshgrid(*(torch.arange(n, dtype=F64) for _ in range(3)), indexing="ij")
    blob = torch.exp(-((kk - 5.5) ** 2 + (ii - 7.0) ** 2 + (jj - 5.5) ** 2) / 2.0).view(1, 1, n, n, n) * (1 - mask)
    force = F3.buoyancy_force(0.5 * blob)
    prob = F3.Fluid3DProblem(mask, bc, force=force, rho=1.0, mu=0.05, dt=1.0)
    u = prob.initial_guess().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([u], lr=1, max_iter=400, tolerance_grad=1e-12, tolerance_change=1e-16,
                            history_size=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = prob.loss(u).sum()
        loss.backward()
        return loss

    start = float(prob.loss(u.detach()))
    opt.step(closure)
    u = u.detach()
    assert float(prob.loss(u)) < 1e-3 * start
    vel = F3.node_velocity(prob, u, which="mean")
    assert float((vel[:, 1] * blob[:, 0]).sum()) < 0  # rising: v_y < 0 where the smoke is
    c, k = F3.transport(blob, vel, mask, 1.0)
    mass0, mass1 = float(blob.sum()), float(c.sum())
    assert mass1 == pytest.approx(mass0, rel=1e-12)
    row0 = float((blob[0, 0] * ii).sum()) / mass0
    row1 = float((c[0, 0] * ii).sum()) / mass1
    assert row1 < row0 - 1e-3
