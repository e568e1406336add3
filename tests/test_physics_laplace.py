"""laplace_loss_grad: gradcheck, discrete physics and Problem validation (the checks every grid op
shares: test_physics_grid_ops.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from metaphys import _ops
from metaphys.physics import LaplaceProblem, stencils
from physics_cases import STENCILS, field, gen, random_mask, requires_kernels



def _problem(seed, size=(2, 1, 6, 7), stencil=9, true_grad=True):
    g = gen(seed)
    n, _, h, w = size
    return LaplaceProblem(random_mask(g, n, h, w), field(g, n, 1, h, w), field(g, n, 1, h, w),
                          stencil=stencil, true_grad=true_grad), field(g, n, 1, h, w)


@pytest.mark.parametrize("which", ["kernel", "twin"])
@pytest.mark.parametrize("stencil", STENCILS)
def test_gradcheck_true_grad(backend, which, stencil):
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    prob, u = _problem(1, stencil=stencil)
    assert torch.autograd.gradcheck(prob.loss, (u.requires_grad_(True),), eps=1e-6, atol=1e-8, rtol=1e-6)


@requires_kernels
def test_pseudo_grad_is_not_the_true_gradient(backend):
    """The stop-gradient formula really changes the gradient (so gradcheck above can fail)."""
    backend("kernel")
    prob, u = _problem(2, true_grad=False)
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        torch.autograd.gradcheck(prob.loss, (u.requires_grad_(True),), eps=1e-6, atol=1e-8, rtol=1e-6)





# --- discrete physics --------------------------------------------------------------------------

def _stencil_offsets(stencil):
    if stencil == 9:
        return [((di, dj), 0.25 if di and dj else 0.5) for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj], -3.0
    return [((-1, 0), 1.0), ((1, 0), 1.0), ((0, -1), 1.0), ((0, 1), 1.0)], -4.0


def _poisson_solution(mask, bc, f, stencil):
    """Solve L(u~) + f = 0 on the free cells of one sample with scipy.sparse (zero padding outside)."""
    m, b, ff = mask[0, 0].numpy(), bc[0, 0].numpy(), f[0, 0].numpy()
    h, w = m.shape
    free = np.argwhere(m == 0)
    index = -np.ones((h, w), dtype=np.int64)
    index[free[:, 0], free[:, 1]] = np.arange(len(free))
    offsets, wc = _stencil_offsets(stencil)
    rows, cols, vals = [], [], []
    rhs = -ff[free[:, 0], free[:, 1]].copy()
    for k, (i, j) in enumerate(free):
        rows.append(k), cols.append(k), vals.append(wc)
        for (di, dj), wt in offsets:
            ii, jj = i + di, j + dj
            if not (0 <= ii < h and 0 <= jj < w):
                continue
            if m[ii, jj] == 0:
                rows.append(k), cols.append(index[ii, jj]), vals.append(wt)
            else:
                rhs[k] -= wt * b[ii, jj]
    A = sp.csr_matrix((vals, (rows, cols)), shape=(len(free), len(free)))
    x = spla.spsolve(A.tocsc(), rhs)
    u = b.copy()
    u[free[:, 0], free[:, 1]] = x
    return torch.from_numpy(u)[None, None]


@pytest.mark.parametrize("stencil", STENCILS)
@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_exact_discrete_poisson_solution_has_zero_residual(backend, which, stencil):
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    g = gen(7)
    h, w = 37, 29
    mask = random_mask(g, 1, h, w, frame=2, p_interior=0.05)
    bc = torch.sin(torch.linspace(0, 6, h * w, dtype=torch.float64)).reshape(1, 1, h, w)
    f = 0.1 * field(g, 1, 1, h, w)
    u = _poisson_solution(mask, bc, f, stencil)
    prob = LaplaceProblem(mask, bc, f, stencil=stencil)
    msr = float(prob.residual(u)[0])
    assert msr < 1e-28, msr
    # and a perturbed field is far from it (the residual measures something)
    assert float(prob.residual(u + 1e-3 * field(g, 1, 1, h, w))[0]) > 1e-8


def _manufactured_rms_error(n, stencil):
    """RMS of L(u)/h^2 - Lap(u) for u = sin(pi x) sin(pi y) on the unit square, h = 1/n, via the op's loss:
    with f = 2 pi^2 h^2 u the residual r = L(u) + f is h^2 times the truncation error."""
    h = 1.0 / n
    x = torch.arange(n + 1, dtype=torch.float64) * h
    u = (torch.sin(math.pi * x)[:, None] * torch.sin(math.pi * x)[None, :])[None, None]
    mask = torch.zeros_like(u)
    mask[..., 0, :] = mask[..., -1, :] = mask[..., :, 0] = mask[..., :, -1] = 1
    prob = LaplaceProblem(mask, u, 2 * math.pi ** 2 * h * h * u, stencil=stencil)
    return math.sqrt(float(prob.residual(u)[0])) / (h * h)


@pytest.mark.parametrize("stencil", STENCILS)
def test_second_order_convergence(stencil):
    errs = [_manufactured_rms_error(n, stencil) for n in (16, 32, 64, 128)]
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    assert errs[-1] < 1e-2
    for r in ratios:
        assert 3.8 < r < 4.2, (errs, ratios)


@pytest.mark.parametrize("stencil", STENCILS)
@pytest.mark.parametrize("which", ["kernel", "twin"])
def test_pseudo_gradient_is_minus_residual_on_free_cells(backend, which, stencil):
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    backend(which)
    g = gen(9)
    n, h, w = 3, 12, 15
    mask, bc, f, u = random_mask(g, n, h, w), field(g, n, 1, h, w), field(g, n, 1, h, w), field(g, n, 1, h, w)
    _, grad = LaplaceProblem(mask, bc, f, stencil=stencil).loss_and_grad(u)
    # residual from the stencil module, independent of the op
    r = stencils.laplacian(mask * bc + (1 - mask) * u, stencil) + f
    count = (1 - mask).flatten(1).sum(1).view(-1, 1, 1, 1)
    wc = stencils.CENTRE_WEIGHT[stencil]
    expected = (2 * wc / count) * (1 - mask) * r  # = -(6 or 8)/N * r: proportional to -r
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)
    assert float((grad * mask).abs().max()) == 0.0
    free = mask == 0
    assert bool((torch.sign(grad[free]) == -torch.sign(r[free])).all())


# --- validation ---------------------------------------------------------------------------------

def _valid(g):
    n, h, w = 2, 6, 7
    return random_mask(g, n, h, w), field(g, n, 1, h, w), field(g, n, 1, h, w)


@pytest.mark.parametrize("label", ["float32", "shape", "mask 0.5", "NaN f", "stencil 7"])
def test_problem_rejects_bad_input(label):
    mask, bc, f = _valid(gen(4))
    kwargs = {}
    if label == "float32":
        mask, exc, msg = mask.float(), TypeError, "must be torch.float64"
    elif label == "shape":
        bc, exc, msg = bc[:, :, :-1], ValueError, "bc must broadcast to shape"
    elif label == "mask 0.5":
        mask = mask.clone()
        mask[0, 0, 3, 3] = 0.5
        exc, msg = ValueError, "mask must contain only 0"
    elif label == "NaN f":
        f = f.clone()
        f[1, 0, 2, 2] = float("nan")
        exc, msg = ValueError, "f contains NaN"
    else:
        kwargs, exc, msg = {"stencil": 7}, ValueError, "stencil must be 9 .* or 5, got 7"
    with pytest.raises(exc, match=msg):
        LaplaceProblem(mask, bc, f, **kwargs)
