"""cloth_loss_grad (spring-mass cloth): kernel vs twin, gradcheck, opcheck, physics, validation."""
from __future__ import annotations

import math

import pytest
import torch

from metaphys import _ops
from metaphys.physics import cloth as C
from physics_cases import assert_close_rel, check_thread_counts, damped_newton, opcheck, requires_kernels
from physics_cases import cloth_args as random_args  # also tests/test_cuda_fluid_cloth.py's builder

F64 = torch.float64


# --- kernel == twin ---------------------------------------------------------------------------

@requires_kernels
@pytest.mark.parametrize("size", [(3, 5, 7), (2, 9, 6), (1, 4, 13), (2, 2, 2), (1, 2, 5), (1, 23, 17)])
def test_kernel_matches_twin(size):
    n, h, w = size
    args = random_args(sum(size), n, h, w)
    terms = C.cloth_terms(*args)
    assert float(terms["contact"].max()) > 0 and float(terms["pin"].max()) > 0  # the random case hits every term
    lk, gk = torch.ops.metaphys.cloth_loss_grad(*args)
    lt, gt = C.cloth_twin(*args)
    assert_close_rel(lk, lt, 1e-12, "loss")
    assert_close_rel(gk, gt, 1e-12, "grad")


@requires_kernels
def test_kernel_matches_twin_without_colliders_and_thread_count():
    args = list(random_args(8, 2, 40, 33))
    args[5] = args[5][:, :0].contiguous()
    check_thread_counts("cloth_loss_grad", args, threads=(1, 2))


def _problem(seed=1, n=2, h=4, w=5):
    a, x, v, pw, px, col, grav, wind, *p = random_args(seed, n, h, w)
    kw = dict(zip(C.PARAM_NAMES, p))
    return C.ClothProblem(x, v_old=v, pin_w=pw, pin_x=px, colliders=col, gravity=grav, wind=wind, **kw), a


@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_gradcheck(backend, which):
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    prob, a = _problem()
    assert float(prob.terms(a)["contact"].max()) > 0
    assert torch.autograd.gradcheck(prob.loss, (a.requires_grad_(True),), eps=1e-6, atol=1e-7, rtol=1e-6)


@requires_kernels
def test_opcheck():
    args = random_args(3, 2, 4, 5)
    opcheck("cloth_loss_grad", args)


# --- physics ---------------------------------------------------------------------------------

def _pinned_at_rest(h=6, w=7, **kw):
    x = C.rest_grid(1, h, w, 1.3)
    pw = torch.zeros(1, 1, h, w, dtype=F64)
    pw[..., 0, 0] = pw[..., 0, -1] = 1.0
    pw[..., 2, 3] = 0.5
    return C.ClothProblem(x, pin_w=pw, rest=1.3, k_stretch=500.0, k_shear=50.0, k_bend=5.0, **kw)


@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_pinned_cloth_at_rest_without_gravity_has_zero_gradient(backend, which):
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    prob = _pinned_at_rest(gravity=(0.0, 0.0, 0.0), damping=0.3)
    loss, grad = prob.loss_and_grad(prob.initial_guess())
    assert float(grad.abs().max()) < 1e-12 and abs(float(loss)) < 1e-25  # round-off of 1.3 * j
    # ... while gravity does pull (the check can fail)
    prob_g = _pinned_at_rest(gravity=(0.0, 0.0, -1.0))
    assert float(prob_g.loss_and_grad(prob_g.initial_guess())[1].abs().max()) > 1e-3


def test_internal_energy_is_invariant_under_rigid_motion():
    g = torch.Generator().manual_seed(5)
    x = C.rest_grid(1, 7, 9, 1.0) + 0.3 * torch.randn(1, 3, 7, 9, generator=g, dtype=F64)
    R = C.rotation_matrix(0.7, -1.9, 2.4)
    t = torch.tensor([3.0, -1.0, 7.5], dtype=F64)
    xr = (torch.einsum("ab,nbhw->nahw", R, x) + t[None, :, None, None]).contiguous()
    kw = dict(gravity=(0.0, 0.0, 0.0), k_stretch=300.0, k_shear=30.0, k_bend=3.0, rest=0.9)
    p1, p2 = C.ClothProblem(x, **kw), C.ClothProblem(xr, **kw)
    zero = p1.initial_guess()
    l1, g1 = p1.loss_and_grad(zero)
    l2, g2 = p2.loss_and_grad(zero)
    assert float(l1) > 1.0
    assert_close_rel(l2, l1, 1e-12, "energy")
    assert_close_rel(g2, torch.einsum("ab,nbhw->nahw", R, g1), 1e-11, "gradient rotates with the cloth")
    for name in ("stretch", "shear", "bend"):
        assert_close_rel(p2.terms(zero)[name], p1.terms(zero)[name], 1e-12, name)


@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_bend_gradient_is_smooth_at_zero_angle(backend, which):
    """A straight row of vertices bent by a tiny angle: E = k_bend phi^2 / (H W) to full precision
    and the gradient is linear in phi (no dead zone, no NaN), exactly 0 when straight."""
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    h, w = 2, 3
    for phi in (0.0, 1e-12, 1e-9, 1e-6, 1e-3):
        x = C.rest_grid(1, h, w, 1.0)
        x[0, 2, :, 2] = math.sin(phi)  # rotate the last edge of both rows by phi about the y axis
        x[0, 0, :, 2] = 1.0 + math.cos(phi)
        prob = C.ClothProblem(x, gravity=(0.0, 0.0, 0.0), k_stretch=0.0, k_shear=0.0, k_bend=1.0)
        loss, grad = prob.loss_and_grad(prob.initial_guess())
        assert bool(torch.isfinite(grad).all())
        want = 2 * phi ** 2 / (h * w)
        assert abs(float(loss) - want) <= 1e-12 * want + 1e-300
        gz = float(grad[0, 2, 0, 2])  # d loss / d a_z of the bent vertex: dt^2 * 2 phi cos(phi) / (h w)
        want_g = 2 * phi * math.cos(phi) / (h * w)
        assert abs(gz - want_g) <= 1e-9 * want_g + 1e-300


def test_cloth_hanging_from_two_pins_reaches_a_static_state(one_thread):
    h = w = 8
    pw = torch.zeros(1, 1, h, w, dtype=F64)
    pw[..., 0, 0] = pw[..., 0, w - 1] = 1.0
    prob = C.ClothProblem(C.rest_grid(1, h, w), pin_w=pw, k_stretch=100.0, k_shear=10.0, k_bend=1.0, damping=0.2,
                          dt=3.0, gravity=(0.0, 0.0, -1.0))
    grad_at_rest = None
    for step in range(120):
        a = damped_newton(prob, prob.initial_guess(), tol=1e-13, max_iter=60, lam_floor=1e-8, free_only=True)
        prob.advance(a)
        grad_at_rest = float(prob.loss_and_grad(prob.initial_guess())[1].abs().max())
        if grad_at_rest < 1e-10:
            break
    assert grad_at_rest < 1e-10, f"not static after {step + 1} steps: |grad| = {grad_at_rest:.2e}"
    x = prob.fields["x_old"][0]
    assert float(prob.fields["v_old"].abs().max()) < 1e-9
    assert torch.equal(x[:, 0, 0], pw.new_tensor([0.0, -3.5, 0.0])) and torch.equal(x[:, 0, -1], pw.new_tensor([7.0, -3.5, 0.0]))
    assert float(x[2].min()) < -6.0  # it hangs down under gravity ...
    assert float(x[2].max()) <= 1e-12  # ... from the pins
    assert 0.0 < float(prob.max_stretch()) < 0.2
    mirror = x[0].flip(1)  # symmetric about the plane between the pins
    assert float((x[0] + mirror - 7.0).abs().max()) < 1e-7


@pytest.mark.parametrize("collider", ["sphere", "box"])
def test_cloth_drapes_over_a_collider_without_penetration(one_thread, collider):
    h = w = 10
    R, margin = 3.0, 0.05
    x = C.rest_grid(1, h, w, origin=(-(w - 1) / 2, 0.0, R + 0.3))
    kw = dict(spheres=[[0.0, 0.0, 0.0, R]]) if collider == "sphere" else dict(boxes=[[0.0, 0.0, 0.0, 2.0, 2.0, R]])
    prob = C.ClothProblem(x, k_stretch=100.0, k_shear=10.0, k_bend=1.0, damping=0.3, gravity=(0.0, 0.0, -0.2),
                          k_contact=1000.0, margin=margin, **kw)
    fields = prob.fields
    sdf_min = []
    for _ in range(15):
        a = damped_newton(prob, prob.initial_guess(), tol=1e-11, max_iter=30, lam_floor=1e-8, free_only=True)
        prob.advance(a)
        xo = fields["x_old"]
        sdf = C.collider_sdf(xo, fields["colliders"])
        sdf_min.append(float(sdf.min()))
    assert min(sdf_min) > 0.0, f"a vertex penetrated the {collider}: min sdf {min(sdf_min):.3e}"
    assert sdf_min[-1] < margin, "the cloth should rest on the collider (inside the contact margin)"
    assert float(fields["x_old"][0, 2].min()) < R - 1.0, "the free parts should drape down"


def test_hard_and_soft_pins():
    prob, a = _problem(9, n=2, h=5, w=6)
    hard = prob.fields["pin_w"] == 1
    soft = (prob.fields["pin_w"] > 0) & ~hard
    assert bool(hard.any()) and bool(soft.any())
    _, grad = prob.loss_and_grad(a)
    assert float((grad * hard).abs().max()) == 0.0
    target = prob.fields["pin_x"].clone()
    prob.advance(a)
    assert torch.equal(prob.fields["x_old"] * hard, target * hard)
    assert float((prob.fields["v_old"] * hard).abs().max()) == 0.0
    # moving targets between frames: the hard pins follow on the next step
    moved = target + 1.5
    prob.set_pins(pin_x=moved)
    x_new, v_new = prob.state(prob.initial_guess())
    assert torch.equal(x_new * hard, moved * hard)
    # soft pins: the spring energy k_pin * w * |x - target|^2 / (H W)
    x = C.rest_grid(1, 3, 4)
    pw = torch.zeros(1, 1, 3, 4, dtype=F64)
    pw[..., 1, 2] = 0.25
    px = x.clone()
    px[0, :, 1, 2] += torch.tensor([0.0, 0.3, 0.4], dtype=F64)
    p = C.ClothProblem(x, pin_w=pw, pin_x=px, k_pin=8.0, gravity=(0.0, 0.0, 0.0))
    assert math.isclose(float(p.terms(p.initial_guess())["pin"]), 8.0 * 0.25 * 0.25 / 12, rel_tol=1e-14)


def test_rest_grid_and_stretch_metric():
    x = C.rest_grid(2, 3, 4, rest=[1.0, 2.0])
    assert torch.equal(x[1, :, 2, 3], torch.tensor([6.0, 2.0, 0.0], dtype=F64))
    assert float(C.max_stretch(x, [1.0, 2.0]).abs().max()) < 1e-15
    x[0, 0, :, 3] += 0.5
    assert math.isclose(float(C.max_stretch(x, [1.0, 2.0])[0]), 0.5, rel_tol=1e-14)


# --- validation -------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    x = C.rest_grid(1, 4, 5)
    with pytest.raises(ValueError, match="k_stretch must be >= 0"):
        C.ClothProblem(x, k_stretch=-1.0)
    with pytest.raises(ValueError, match="damping must be finite"):
        C.ClothProblem(x, damping=float("nan"))
    with pytest.raises(ValueError, match="rest must be > 0"):
        C.ClothProblem(x, rest=0.0)
    with pytest.raises(ValueError, match=r"pin_w must lie in \[0, 1\]"):
        C.ClothProblem(x, pin_w=torch.full((1, 1, 4, 5), 1.5, dtype=F64))
    with pytest.raises(ValueError, match="x_old must have 3 channels"):
        C.ClothProblem(x[:, :2])
    with pytest.raises(ValueError, match="v_old must broadcast"):
        C.ClothProblem(x, v_old=torch.zeros(1, 3, 4, 4, dtype=F64))
    with pytest.raises(TypeError, match="float64"):
        C.ClothProblem(x.float())
    with pytest.raises(ValueError, match="spheres must have shape"):
        C.ClothProblem(x, spheres=torch.zeros(1, 2, 3, dtype=F64))
    with pytest.raises(ValueError, match="spheres: radius must be >= 0"):
        C.ClothProblem(x, spheres=[[0.0, 0.0, 0.0, -1.0]])
    with pytest.raises(ValueError, match="boxes contains NaN"):
        C.ClothProblem(x, boxes=[[0.0, 0.0, float("nan"), 1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="gravity must be a 3-vector"):
        C.ClothProblem(x, gravity=(0.0, -1.0))
    with pytest.raises(ValueError, match="at least 2x2"):
        C.ClothProblem(C.rest_grid(1, 1, 5))
    prob = C.ClothProblem(x)
    with pytest.raises(ValueError, match=r"pin_w must lie in \[0, 1\]"):
        prob.set_pins(pin_w=torch.full((1, 1, 4, 5), -0.1, dtype=F64))


@requires_kernels
def test_kernel_rejects_bad_shapes():
    args = list(random_args(1, 2, 4, 5))
    op = torch.ops.metaphys.cloth_loss_grad
    bad = [(0, args[0][:, :2].contiguous(), "a must have shape"), (3, args[3][:1], "pin_w must have shape"),
           (5, args[5][..., :3].contiguous(), "colliders must have shape"), (6, args[6][:, :2].contiguous(), "gravity"),
           (11, args[11][:1], "k_bend must have shape"), (2, args[2].float(), "v_old must be float64")]
    for k, v, msg in bad:
        a = list(args)
        a[k] = v
        with pytest.raises(RuntimeError, match=msg):
            op(*a)
