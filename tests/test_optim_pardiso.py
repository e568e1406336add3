"""MKL PARDISO factorizations (metaphys.optim.pardiso) against dense answers, and Newton on them.

The README's set-up installs the `mkl` wheel: these tests require it (they do not skip)."""
import copy
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from metaphys.optim import pardiso
from metaphys.optim.newton import PARDISO_FROM, REFACTOR_AFTER, NewtonSolver
from metaphys.optim.pardiso import PardisoFactor
from metaphys.physics.cloth import ClothProblem, rest_grid


def _hanging_cloth(n=16):
    """A cloth off its rest state (all terms active) hanging from two corners beside a sphere."""
    g = torch.Generator().manual_seed(0)
    x = rest_grid(1, n, n, rotation=torch.tensor([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]], dtype=torch.float64))
    x = x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    w = torch.zeros(1, 1, n, n, dtype=torch.float64)
    w[..., 0, 0] = w[..., 0, -1] = 1.0
    return ClothProblem(x, pin_w=w, gravity=(0.0, 0.0, -0.5), wind=(0.0, 0.1, 0.0), k_stretch=500.0, k_shear=10.0,
                        k_bend=1.0, damping=0.1, spheres=[[n / 2, 3.0, -n / 2, 4.0]])


def _symmetric(n, shift, seed=0):
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=0.05, random_state=seed, data_rvs=rng.standard_normal)
    return (A + A.T + sp.diags(np.full(n, shift))).tocsr()


def test_mkl_pardiso_is_installed_by_the_setup():
    assert pardiso.available(), "the README's set-up installs the `mkl` wheel (requirements.txt)"


@pytest.mark.parametrize("shift", [8.0, 0.5])   # positive definite, then indefinite
def test_pardiso_solves_like_a_dense_solve_and_reports_the_inertia(shift):
    A = _symmetric(120, shift)
    dense = A.toarray()
    b = np.random.default_rng(1).standard_normal(120)
    f = PardisoFactor(A, threads=1)
    x = f.solve(b)
    np.testing.assert_allclose(x, np.linalg.solve(dense, b), rtol=1e-9, atol=1e-12)
    eig = np.linalg.eigvalsh(dense)
    assert f.inertia == (int((eig > 0).sum()), int((eig < 0).sum()))
    assert f.factor_nonzeros >= sp.triu(A).nnz


def test_pardiso_reads_only_the_upper_triangle_and_needs_no_stored_diagonal():
    # [[0, 1], [1, 0]] has no stored diagonal; PARDISO's symmetric storage needs one: added as zeros
    A = sp.csr_matrix(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 2.0, 3.0]]))
    b = np.array([1.0, 2.0, 3.0])
    expected = np.linalg.solve(A.toarray(), b)
    np.testing.assert_allclose(PardisoFactor(A).solve(b), expected, rtol=1e-12)
    np.testing.assert_allclose(PardisoFactor(sp.triu(A)).solve(b), expected, rtol=1e-12)


def test_pardiso_refuses_bad_input_and_pickling_and_copies_own_their_handle():
    with pytest.raises(ValueError, match="square"):
        PardisoFactor(sp.csr_matrix(np.ones((2, 3))))
    f = PardisoFactor(_symmetric(30, 8.0))
    with pytest.raises(ValueError, match="shape"):
        f.solve(np.ones(29))
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(f)
    g = copy.deepcopy(f)
    b = np.ones(30)
    f.release()
    with pytest.raises(pardiso.PardisoError, match="released"):
        f.solve(b)
    np.testing.assert_allclose(g.solve(b), np.linalg.solve(_symmetric(30, 8.0).toarray(), b), rtol=1e-10)


def test_auto_factorization_switches_to_pardiso_at_its_measured_size():
    solver = NewtonSolver()
    assert solver.factorization_for(PARDISO_FROM - 1) == "superlu"
    assert solver.factorization_for(PARDISO_FROM) == "pardiso"
    assert NewtonSolver(factorization="superlu").factorization_for(10 ** 6) == "superlu"
    with pytest.raises(ValueError, match="factorization"):
        NewtonSolver(factorization="cholmod")
    # the cheaper factorization is refreshed sooner, unless the caller says otherwise
    assert solver._refactor_after(PARDISO_FROM) == REFACTOR_AFTER["pardiso"] < REFACTOR_AFTER["superlu"]
    assert solver._refactor_after(PARDISO_FROM - 1) == REFACTOR_AFTER["superlu"]
    assert NewtonSolver(refactor_after=5)._refactor_after(PARDISO_FROM) == 5


@pytest.mark.parametrize("linear", ["direct", "pcg"])
def test_newton_on_pardiso_reaches_the_superlu_answer(linear):
    prob = _hanging_cloth()
    a0 = torch.zeros(prob.shape, dtype=torch.float64)
    outs = {f: NewtonSolver(tol=1e-10, max_iterations=100, linear=linear, factorization=f).solve(prob, a0)
            for f in ("superlu", "pardiso")}
    assert all(o.converged for o in outs.values())
    assert outs["pardiso"].hessians > 0
    diff = float((outs["superlu"].u - outs["pardiso"].u).abs().max())
    assert diff <= 1e-6 * float(outs["superlu"].u.abs().max())


def test_the_factorization_benchmark_runs_and_writes_both_tables(tmp_path):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "f.md"
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "cloth_factorizations.py"), "--sizes", "16",
                           "--frames", "1", "--scenes", "curtain", "--out", str(out)], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## The factorization alone" in text and "## Whole frames" in text
    for variant in ("| superlu |", "| pardiso |", "| pardiso_refactor8 |"):
        assert variant in text
    assert "| 1/1 |" in text   # the frame converged with every factorization
