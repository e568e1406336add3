"""laplace3d_loss_grad (3-D Laplace / Poisson, issue #28 item 2): kernel == twin on odd sizes with both
stencils and both gradient modes, thread counts, opcheck, gradcheck (true gradient; the pseudo-gradient is
not it), the stencils against explicit sums, the collapse of a z-invariant problem to the 2-D op, the exact
trilinear solution, the problem protocol and validation. CUDA: tests/test_cuda_fluid_cloth.py."""
from __future__ import annotations

import pytest
import torch

from metaphys import _ops
from metaphys.physics import LaplaceProblem
from metaphys.physics import laplace3d as L3
from physics_cases import assert_close_rel, check_thread_counts, laplace3d_args, opcheck, requires_kernels

F64 = torch.float64
OP = "laplace3d_loss_grad"
SIZES = [(1, 5, 7, 9), (3, 6, 8, 11), (2, 3, 3, 4), (1, 12, 4, 17)]


def kernel(*args):
    return torch.ops.metaphys.laplace3d_loss_grad(*args)


@requires_kernels
@pytest.mark.parametrize("true_grad", [False, True])
@pytest.mark.parametrize("stencil", [27, 7])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_twin(size, stencil, true_grad):
    n, d, h, w = size
    args = laplace3d_args(sum(size) + stencil, n, h, w, d=d, stencil=stencil, true_grad=true_grad)
    lk, gk = kernel(*args)
    lt, gt = L3.laplace3d_twin(*args)
    assert_close_rel(lk, lt, 1e-12, "loss")
    assert_close_rel(gk, gt, 1e-12, "grad")
    assert float((gk * args[1]).abs().max()) == 0.0  # no gradient on Dirichlet nodes


@requires_kernels
@pytest.mark.parametrize("true_grad", [False, True])
def test_thread_counts(true_grad):
    check_thread_counts(OP, laplace3d_args(7, 2, 33, 40, d=21, true_grad=true_grad), threads=(1, 2))


@requires_kernels
def test_opcheck():
    for stencil in (27, 7):
        for true_grad in (False, True):
            opcheck(OP, laplace3d_args(3, 2, 6, 7, d=5, stencil=stencil, true_grad=true_grad))


def _problem(seed=1, stencil=27, true_grad=True):
    u, mask, bc, f, *_ = laplace3d_args(seed, 2, 6, 7, d=5)
    return L3.Laplace3DProblem(mask, bc, f, stencil=stencil, true_grad=true_grad), u


@pytest.mark.parametrize("stencil", [27, 7])
@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_gradcheck_true_grad(backend, which, stencil):
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    prob, u = _problem(stencil=stencil)
    assert torch.autograd.gradcheck(prob.loss, (u.requires_grad_(True),), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_pseudo_grad_is_not_the_true_gradient(backend, which):
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    prob, u = _problem(true_grad=False)
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        torch.autograd.gradcheck(prob.loss, (u.requires_grad_(True),), eps=1e-6, atol=1e-7, rtol=1e-6)
    # and it is the Appendix-D one: 2/N_free * centre weight * free * r
    u = u.detach()
    loss, grad = prob.loss_and_grad(u)
    fl = prob.fields
    free = 1 - fl["mask"]
    r = L3.laplacian3d(fl["mask"] * fl["bc"] + free * u, 27) + fl["f"]
    want = 2.0 / free.flatten(1).sum(1).view(-1, 1, 1, 1, 1) * -3.5 * free * r
    assert_close_rel(grad, want, 1e-12, "pseudo-gradient")


def test_stencils_against_explicit_sums():
    x = torch.randn(1, 1, 4, 5, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 1))[0, 0]
    k, i, j = 2, 3, 1
    faces = edges = corners = 0.0
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            for c in (-1, 0, 1):
                v = float(xp[1 + k + a, 1 + i + b, 1 + j + c])
                kind = (a != 0) + (b != 0) + (c != 0)
                faces += v if kind == 1 else 0.0
                edges += v if kind == 2 else 0.0
                corners += v if kind == 3 else 0.0
    centre = float(x[0, 0, k, i, j])
    assert float(L3.laplacian3d(x, 7)[0, 0, k, i, j]) == pytest.approx(faces - 6 * centre, rel=1e-13)
    want27 = faces / 4 + edges / 8 + corners / 16 - 3.5 * centre
    assert float(L3.laplacian3d(x, 27)[0, 0, k, i, j]) == pytest.approx(want27, rel=1e-13)
    # both stencils annihilate (tri)linear fields inside the grid
    r = torch.arange(6, dtype=F64)
    lin = (2 * r.view(1, 1, 6, 1, 1) - r.view(1, 1, 1, 6, 1) + 3 * r.view(1, 1, 1, 1, 6)
           + r.view(1, 1, 6, 1, 1) * r.view(1, 1, 1, 6, 1) * r.view(1, 1, 1, 1, 6))
    for s in (27, 7):
        assert float(L3.laplacian3d(lin, s)[..., 1:-1, 1:-1, 1:-1].abs().max()) < 1e-12


@pytest.mark.parametrize("true_grad", [False, True])
def test_a_z_invariant_problem_is_the_2d_problem_in_every_layer(each_backend, true_grad):
    """With L27, a problem whose free nodes, values and source do not vary along z (the z-frame Dirichlet
    with the 2-D field's values) has the 2-D 9-point problem's loss; the residual is the 2-D residual."""
    g = torch.Generator().manual_seed(5)
    h, w, d = 11, 13, 7
    mask2 = (torch.rand(1, 1, h, w, generator=g) < 0.2).to(F64)
    mask2[..., 0, :] = mask2[..., -1, :] = 1
    mask2[..., :, 0] = mask2[..., :, -1] = 1
    u2, bc2, f2 = (torch.randn(1, 1, h, w, generator=g, dtype=F64) for _ in range(3))
    p2 = LaplaceProblem(mask2, bc2, f2, stencil=9, true_grad=true_grad)
    ut2 = mask2 * bc2 + (1 - mask2) * u2

    def tile(x):
        return x.unsqueeze(2).expand(1, 1, d, h, w).contiguous()

    mask3 = tile(mask2)
    mask3[:, :, :2] = 1
    mask3[:, :, -2:] = 1
    p3 = L3.Laplace3DProblem(mask3, tile(ut2), tile(f2), stencil=27, true_grad=true_grad)
    l2, g2 = p2.loss_and_grad(u2)
    l3, g3 = p3.loss_and_grad(tile(u2))
    assert float(l3) == pytest.approx(float(l2), rel=1e-12)
    if not true_grad:  # the pseudo-gradient: the 2-D one per free layer, rescaled by N_free and the centre weight
        n2, n3 = float((1 - mask2).sum()), float((1 - mask3).sum())
        for k in range(2, d - 2):
            assert_close_rel(g3[:, :, k], g2 * (n2 / n3) * (3.5 / 3.0), 1e-12, f"layer {k}")


def test_the_trilinear_field_is_the_exact_solution(each_backend):
    for stencil in (27, 7):
        p = L3.trilinear_laplace3d(12, stencil=stencil)
        assert float(p.residual(p.fields["bc"])) < 1e-28
        assert float(p.residual(p.initial_guess())) > 1e-4


def test_problem_protocol():
    p, u = _problem(true_grad=False)
    assert p.shape == (2, 1, 5, 6, 7) and p.initial_guess().shape == p.shape
    stepped = p.apply(u, torch.ones_like(u))
    m = p.fields["mask"]
    assert torch.equal(stepped * m, p.fields["bc"] * m)   # Dirichlet values re-imposed
    sub = p.select(torch.tensor([1]))
    assert sub.shape == (1, 1, 5, 6, 7)
    assert torch.allclose(sub.loss_and_grad(u[1:])[0], p.loss_and_grad(u)[0][1:], rtol=1e-14, atol=0)
    with pytest.raises(TypeError, match="stationary"):
        p.advance(u)


def test_bad_inputs_raise_clear_errors():
    m = L3.frame_mask3d(1, 6, 6, 6)
    with pytest.raises(ValueError, match="stencil must be 27"):
        L3.Laplace3DProblem(m, 0.0, stencil=9)
    with pytest.raises(ValueError, match="5 dimensions"):
        L3.Laplace3DProblem(m[:, :, 0], 0.0)
    bad = m.clone()
    bad[0, 0, 3, 3, 3] = 0.5
    with pytest.raises(ValueError, match="only 0"):
        L3.Laplace3DProblem(bad, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        L3.Laplace3DProblem(m, float("nan"))
    with pytest.raises(ValueError, match="broadcast"):
        L3.Laplace3DProblem(m, torch.zeros(1, 1, 6, 6, 5, dtype=F64))
    p = L3.Laplace3DProblem(m, 0.0)
    with pytest.raises(ValueError, match="shape"):
        p.check_unknown(torch.zeros(1, 1, 6, 6, 7, dtype=F64))


@requires_kernels
def test_kernel_rejects_bad_input():
    u, mask, bc, f, s, tg = laplace3d_args(1, 2, 6, 7, d=5)
    with pytest.raises(RuntimeError, match="5 dimensions"):
        kernel(u[:, :, 0].contiguous(), mask, bc, f, s, tg)
    with pytest.raises(RuntimeError, match="float64"):
        kernel(u.float(), mask, bc, f, s, tg)
    with pytest.raises(RuntimeError, match=r"mask must have shape \["):
        kernel(u, mask[..., :-1].contiguous(), bc, f, s, tg)
    with pytest.raises(RuntimeError, match="stencil must be 27 .* or 7, got 9"):
        kernel(u, mask, bc, f, 9, tg)
    with pytest.raises(RuntimeError, match="1 channel"):
        kernel(torch.cat([u, u], 1), mask, bc, f, s, tg)
