"""The per-element cloth Hessian (metaphys/physics/cloth_hessian.py, csrc/cloth/cloth_hessian_*):
kernel == twin (exact and projected), twin == autograd Hessian of the kernel's terms, kernel ==
Newton's central differences, the projection is PSD and changes nothing where every element is
convex, the CSR pattern, opcheck. CUDA vs CPU: tests/test_cuda_fluid_cloth.py."""
import numpy as np
import pytest
import torch

from metaphys.optim.newton import sparse_hessian
from metaphys.physics import cloth as C
from metaphys.physics.cloth_hessian import (OFFSETS, blocks_to_csr, blocks_to_csr_pattern, cloth_hessian_blocks,
                                            cloth_hessian_twin)
from physics_cases import assert_close_rel, cloth_args, requires_kernels

F64 = torch.float64


def kernel(args, project):
    return torch.ops.metaphys.cloth_hessian(*args, project)


def problem_of(args):
    u, x, v, pw, px, col, grav, wind, *p = args
    return C.ClothProblem(x, v_old=v, pin_w=pw, pin_x=px, colliders=col, gravity=grav, wind=wind,
                          **dict(zip(C.PARAM_NAMES, p)))


def flat_args(n, h, w, rest, *, spheres=None, pins=True, k_shear=5.0, k_bend=0.5):
    """A flat rest grid (spacing 1, every hinge exactly straight, every shear angle exactly 0), a = 0:
    rest < 1 stretches every spring, rest > 1 compresses it. Optional sphere contacts; a hard pin
    at (0, 0) and a soft one at (h-1, w-1)."""
    x = C.rest_grid(n, h, w, 1.0).contiguous()
    a = torch.zeros_like(x)
    pw = torch.zeros(n, 1, h, w, dtype=F64)
    if pins:
        pw[:, 0, 0, 0] = 1.0
        pw[:, 0, -1, -1] = 0.5
    col = C.table_from_lists(n, spheres=spheres)
    par = lambda v: torch.full((n,), float(v), dtype=F64)
    params = (par(rest), par(100.0), par(k_shear), par(k_bend), par(1.0), par(0.1), par(50.0), par(500.0),
              par(0.1), par(0.5))
    return (a, x, torch.zeros_like(x), pw, x.clone(), col, torch.zeros(n, 3, dtype=F64),
            torch.zeros(n, 3, dtype=F64)) + params


def dense(blocks, sample=0):
    _, _, _, _, h, w = blocks.shape
    return blocks_to_csr(blocks, blocks_to_csr_pattern(h, w), sample).toarray()


def autograd_hessian(args, sample=0):
    """Dense exact Hessian of the kernel's terms (cloth_terms, smooth bend form) for one sample."""
    one = tuple(t[sample:sample + 1] for t in args)
    _, _, h, w = one[0].shape

    def f(flat):
        return sum(C.cloth_terms(flat.view(1, 3, h, w), *one[1:], smooth=True).values()).sum()

    return torch.autograd.functional.hessian(f, one[0].reshape(-1)).numpy()


# random states: pins hard and soft, sphere and box contacts, N = 2 with different parameters
RANDOM = [(0, 2, 5, 7), (1, 2, 7, 5), (2, 1, 2, 2), (3, 2, 2, 5), (4, 1, 6, 2), (5, 2, 8, 8)]


@requires_kernels
@pytest.mark.parametrize("project", [False, True, 2])
@pytest.mark.parametrize("case", RANDOM, ids=lambda c: f"{c[1]}x{c[2]}x{c[3]}")
def test_kernel_matches_twin_random(case, project):
    args = cloth_args(*case)
    b = kernel(args, project)
    assert b.shape == (case[1], 13, 3, 3, case[2], case[3]) and b.dtype == F64
    assert_close_rel(b, cloth_hessian_twin(*args, project), 1e-9, f"{case} project={project}")


@requires_kernels
@pytest.mark.parametrize("project", [False, True, 2])
@pytest.mark.parametrize("rest", [0.8, 1.25])
def test_kernel_matches_twin_flat_straight_hinges(rest, project):
    # straight hinges (phi = 0), right shear angles, stretched or compressed springs, sphere contacts
    n, h, w = 2, 5, 6
    sph = torch.tensor([[[2.0, 2.5, -0.95, 1.0]], [[1.0, 4.0, -0.5, 0.6]]], dtype=F64)
    args = flat_args(n, h, w, rest, spheres=sph)
    b = kernel(args, project)
    assert_close_rel(b, cloth_hessian_twin(*args, project), 1e-9, f"flat rest={rest} project={project}")
    assert float(b[:, 0].abs().max()) > 0


@requires_kernels
@pytest.mark.parametrize("project", [False, 2])
def test_kernel_matches_twin_across_the_bend_series_switch(project):
    # the closed-form bend Hessian takes phi / sin(phi) and (1 - phi cot phi) / sin^2(phi) from their
    # series below phi = 0.1 and directly above: hinges bent just below and above it, and nearly straight
    turns = [1e-4, 0.05, 0.0999, 0.1001, 0.4]
    w = len(turns) + 2
    theta = np.concatenate([[0.0], np.cumsum(turns)])
    row = np.concatenate([[[0.0, 0.0]], np.cumsum(np.stack([np.cos(theta), np.sin(theta)], 1), 0)])   # (x, z)
    x = torch.zeros(1, 3, 2, w, dtype=F64)
    for i in range(2):
        x[0, 0, i], x[0, 1, i], x[0, 2, i] = torch.as_tensor(row[:, 0]), float(i), torch.as_tensor(row[:, 1])
    base = flat_args(1, 2, w, 1.0, pins=False, k_bend=2.0)
    args = (torch.zeros_like(x), x, torch.zeros_like(x), base[3], x.clone()) + base[5:]
    b = kernel(args, project)
    assert_close_rel(b, cloth_hessian_twin(*args, project), 1e-9, f"bend series switch project={project}")


def test_twin_equals_autograd_hessian_and_csr():
    for seed, (n, h, w) in enumerate([(2, 4, 5), (1, 3, 3), (1, 1, 5), (1, 4, 1)]):
        args = cloth_args(seed + 20, n, h, w)
        blocks = cloth_hessian_twin(*args, False)
        for s in range(n):
            want = autograd_hessian(args, s)
            got = dense(blocks, s)
            scale = np.abs(want).max()
            assert np.abs(got - want).max() <= 1e-9 * scale, (n, h, w, s)
            assert np.abs(got - got.T).max() <= 1e-12 * scale


@requires_kernels
def test_kernel_equals_autograd_on_flat_grid():
    args = flat_args(1, 4, 5, 1.1, spheres=torch.tensor([[[1.5, 2.0, -0.95, 1.0]]], dtype=F64))
    want = autograd_hessian(args)
    got = dense(kernel(args, False))
    assert np.abs(got - want).max() <= 1e-9 * np.abs(want).max()


def drape_problem(size=16):
    """A sheet hanging from two corners over a sphere, moved by a random acceleration: stretched and
    compressed springs, bent hinges, contacts."""
    prob = C.ClothProblem(C.rest_grid(1, size, size, 1.0 / (size - 1)), k_stretch=1000.0, k_shear=10.0,
                          k_bend=0.05, damping=0.2, margin=0.05, dt=0.05, rest=1.0 / (size - 1))
    pin = torch.zeros(1, 1, size, size, dtype=F64)
    pin[..., 0, 0] = 1
    pin[..., 0, -1] = 0.5
    prob.set_pins(pin_w=pin)
    prob.set_colliders(spheres=torch.tensor([[[0.5, 0.5, -0.25, 0.28]]], dtype=F64),
                       boxes=torch.tensor([[[0.2, 0.8, -0.02, 0.1, 0.1, 0.05]]], dtype=F64))
    g = torch.Generator().manual_seed(0)
    a = 4.0 * torch.randn(1, 3, size, size, generator=g, dtype=F64)
    a[:, 2] -= 10.0
    return prob, a


@requires_kernels
def test_kernel_equals_newton_differences():
    prob, a = drape_problem(16)
    got = dense(cloth_hessian_blocks(prob, a, project=False))
    want = sparse_hessian(prob, prob.impose(a)).toarray()
    # hard pins: the differences leave their rows and columns 0, so does the op
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-7 * scale, np.abs(got - want).max() / scale
    x = prob.state(a)[0]
    assert bool((C.contact_energy(x, prob.fields["colliders"], prob.fields["margin"]) > 0).any())


def min_eig(m):
    return float(np.linalg.eigvalsh(0.5 * (m + m.T)).min())


@requires_kernels
def test_projection_is_psd_and_exact_where_convex():
    for args in (cloth_args(7, 1, 6, 7), flat_args(1, 5, 6, 1.25), drape_args()):
        exact, proj = dense(kernel(args, False)), dense(kernel(args, True))
        scale = np.abs(exact).max()
        assert min_eig(exact) < -1e-6 * scale  # the exact one is indefinite here
        assert min_eig(proj) >= -1e-12 * scale
    # stretched flat sheet, no contact: every element convex, projection changes nothing
    args = flat_args(2, 5, 6, 0.8)
    exact, proj = kernel(args, False), kernel(args, True)
    assert_close_rel(proj, exact, 1e-12, "stretched flat sheet")


def drape_args():
    prob, a = drape_problem(8)
    return (prob.impose(a).contiguous(),) + tuple(prob.op_args())


@requires_kernels
def test_each_projected_element_is_psd():
    """Grids whose only energy is one kind of element (mass ~ 0), each element on its own vertices:
    the assembled projected matrix is block-diagonal per element, so every element is PSD."""
    g = torch.Generator().manual_seed(3)
    for h, w, which in ((2, 3, "bend"), (3, 2, "bend"), (2, 2, "shear"), (2, 2, "stretch")):
        args = list(flat_args(1, h, w, 1.3, pins=False, k_shear=5.0 if which == "shear" else 0.0,
                              k_bend=0.5 if which == "bend" else 0.0))
        args[0] = 0.3 * torch.randn(1, 3, h, w, generator=g, dtype=F64)
        args[10] = args[10] * (1.0 if which == "stretch" else 0.0)
        args[13] = torch.full((1,), 1e-12, dtype=F64)       # mass ~ 0: the elements alone
        args[14] = torch.zeros(1, dtype=F64)
        exact, proj = dense(kernel(tuple(args), False)), dense(kernel(tuple(args), True))
        scale = np.abs(exact).max()
        assert min_eig(exact) < -1e-8 * scale, which
        assert min_eig(proj) >= -1e-12 * scale, which


def test_restated_pieces_match_physics_cloth():
    from metaphys.physics import cloth_hessian as CH
    assert OFFSETS == ((0, 0),) + tuple(C.ClothProblem.hessian_offsets)
    for h, w in ((1, 4), (3, 1), (2, 2), (5, 7)):
        assert torch.equal(CH.lumped(h, w), C.lumped_weights(h, w)[0, 0])
    a, x, v, pw, px, *_, dt = cloth_args(3, 2, 5, 6)
    assert torch.equal(CH.x_new_of(a, x, v, pw, px, dt), C.cloth_state(a, x, v, pw, px, dt)[0])


def test_pattern_is_fixed_and_fills_every_block():
    h, w = 5, 7
    pat = blocks_to_csr_pattern(h, w)
    inside = sum(max(0, h - abs(di)) * max(0, w - abs(dj)) for di, dj in OFFSETS)
    assert pat.csr.nnz == 9 * inside and len(pat.gather) == pat.csr.nnz
    blocks = torch.arange(13 * 9 * h * w, dtype=F64).view(1, 13, 3, 3, h, w) + 1.0
    m = blocks_to_csr(blocks, pat)
    assert m.nnz == pat.csr.nnz and m.has_sorted_indices
    # entry (r, i, j), (c, i+di, j+dj) = blocks[0, k, r, c, i, j]
    for k, (di, dj) in enumerate(OFFSETS):
        for (r, c, i, j) in ((0, 2, 2, 3), (1, 1, 0, 0), (2, 0, 4, 6)):
            ni, nj = i + di, j + dj
            if 0 <= ni < h and 0 <= nj < w:
                assert m[r * h * w + i * w + j, c * h * w + ni * w + nj] == blocks[0, k, r, c, i, j]
    zero = blocks_to_csr(torch.zeros_like(blocks), pat)
    assert zero.nnz == pat.csr.nnz  # explicit zeros kept


@requires_kernels
def test_kernel_refuses_grids_below_2x2_and_twin_dispatch():
    args = cloth_args(0, 1, 1, 4)
    with pytest.raises(RuntimeError, match="at least 2x2"):
        kernel(args, False)
    prob, a = drape_problem(6)
    from metaphys import _ops
    old = _ops.backend()
    try:
        _ops.set_backend("twin")
        twin = cloth_hessian_blocks(prob, a, project=True)
    finally:
        _ops.set_backend(old)
    assert_close_rel(cloth_hessian_blocks(prob, a, project=True), twin, 1e-9, "dispatch")


@requires_kernels
def test_threads_do_not_change_the_result():
    args = cloth_args(9, 2, 23, 31)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel(args, True)
        torch.set_num_threads(max(2, old))
        many = kernel(args, True)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, many)


@requires_kernels
def test_opcheck_cpu():
    args = cloth_args(4, 2, 6, 7)
    for project in (False, True, 2):
        torch.library.opcheck(torch.ops.metaphys.cloth_hessian.default, tuple(args) + (project,),
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                          "test_aot_dispatch_dynamic"))


def _compressed_cloth(n=7):
    """A cloth whose rest length exceeds its edges (every spring compressed) with two hard pins."""
    g = torch.Generator().manual_seed(4)
    x = C.rest_grid(1, n, n) * 0.9 + 0.05 * torch.randn(1, 3, n, n, generator=g, dtype=torch.float64)
    w = torch.zeros(1, 1, n, n, dtype=torch.float64)
    w[..., 0, 0] = w[..., 0, -1] = 1.0
    prob = C.ClothProblem(x, pin_w=w, gravity=(0.0, 0.0, -0.5), k_stretch=300.0, k_shear=5.0, k_bend=0.5,
                          damping=0.1, dt=0.7)
    a = 0.1 * torch.randn(1, 3, n, n, generator=g, dtype=torch.float64)
    return prob, prob.impose(a)


def test_the_psd_correction_blocks_equal_the_springs_negative_curvature_edge_by_edge():
    """psd_correction_blocks against a plain loop over the compressed springs: the negation of each
    one's transverse curvature 2k (|e| - L0)/|e| (I - e^ e^T), dt^4 in a-space, none in pinned rows."""
    prob, a = _compressed_cloth()
    fl = prob.fields
    n = prob.shape[-1]
    x = prob.state(a)[0][0]
    L0, dt4 = float(fl["rest"][0]), float(fl["dt"][0]) ** 4
    pinned = (fl["pin_w"][0, 0] == 1).flatten().numpy()
    ref = np.zeros((3 * n * n, 3 * n * n))
    for (di, dj), count in (((1, 0), (n - 1) * n), ((0, 1), n * (n - 1))):
        k = float(fl["k_stretch"][0]) / count
        for i in range(n - di):
            for j in range(n - dj):
                e = (x[:, i + di, j + dj] - x[:, i, j]).numpy()
                length = np.linalg.norm(e)
                coef = 2 * k * (length - L0) / length
                if coef >= 0:
                    continue
                block = -coef * dt4 * (np.eye(3) - np.outer(e, e) / length ** 2)
                p, q = i * n + j, (i + di) * n + j + dj
                for (r, c, sign) in ((p, p, 1), (q, q, 1), (p, q, -1), (q, p, -1)):
                    if pinned[r] or pinned[c]:
                        continue
                    ref[np.ix_([r, r + n * n, r + 2 * n * n], [c, c + n * n, c + 2 * n * n])] += sign * block
    got = prob.hessian_psd_correction(a).toarray()
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15 * np.abs(ref).max())
    # in the Hessian's blocks (Newton-Krylov's projected matrix) it is the same sum
    exact = prob.hessian_matrix(a).toarray()
    summed = prob.hessian_matrix(a, psd_correction=True).toarray()
    np.testing.assert_allclose(summed, exact + ref, rtol=1e-12, atol=1e-12 * np.abs(exact).max())
    # and with it the projected Hessian of stretch alone is PSD (shear and bend off)
    fl["k_shear"], fl["k_bend"] = fl["k_shear"] * 0, fl["k_bend"] * 0
    free = ~np.repeat(pinned[None], 3, 0).reshape(-1)
    H = prob.hessian_matrix(a, psd_correction=True).toarray()[np.ix_(free, free)]
    assert np.linalg.eigvalsh(H).min() > -1e-12 * np.abs(H).max()


@requires_kernels
@pytest.mark.parametrize("rest", [0.8, 1.25])
def test_projecting_springs_and_contacts_is_the_exact_hessian_plus_the_psd_correction(rest):
    # project=2: Newton-Krylov's projected matrix in one kernel call; it must equal what it replaced,
    # the exact blocks plus ClothProblem.psd_correction_blocks (compressed springs at rest 1.25, a
    # sphere contact either way), and differ from the exact Hessian where springs are compressed
    n, h, w = 1, 5, 6
    sph = torch.tensor([[[2.0, 2.5, -0.95, 1.0]]], dtype=F64)
    args = flat_args(n, h, w, rest, spheres=sph)
    args = (args[0] + 0.05 * torch.randn(args[0].shape, generator=torch.Generator().manual_seed(1), dtype=F64),) + args[1:]
    prob = problem_of(args)
    want = kernel(args, False)[0] + prob.psd_correction_blocks(args[0])
    got = kernel(args, 2)[0]
    assert_close_rel(got, want, 1e-12, f"rest={rest}")
    assert_close_rel(cloth_hessian_twin(*args, 2)[0], want, 1e-9, f"twin rest={rest}")
    assert float((got - kernel(args, False)[0]).abs().max()) > 0      # something was projected
    with pytest.raises(RuntimeError, match="project must be 0"):
        kernel(args, 3)
    with pytest.raises(ValueError, match="project must be"):
        cloth_hessian_twin(*args, 3)
