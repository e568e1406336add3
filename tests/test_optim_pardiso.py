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


def test_auto_factorization_is_pardiso_wherever_mkl_loads():
    solver = NewtonSolver()
    assert PARDISO_FROM == 0 and solver.factorization_for(3) == "pardiso"
    assert NewtonSolver(factorization="superlu").factorization_for(10 ** 6) == "superlu"
    with pytest.raises(ValueError, match="factorization"):
        NewtonSolver(factorization="cholmod")
    with pytest.raises(ValueError, match="preconditioner_precision"):
        NewtonSolver(preconditioner_precision="half")
    # the cheaper factorization is refreshed sooner, unless the caller says otherwise
    assert solver._refactor_after(100) == REFACTOR_AFTER["pardiso"] < REFACTOR_AFTER["superlu"]
    assert NewtonSolver(factorization="superlu")._refactor_after(100) == REFACTOR_AFTER["superlu"]
    assert NewtonSolver(refactor_after=5)._refactor_after(100) == 5


def test_a_refactorization_reuses_the_analysis_of_the_same_pattern_only():
    A = _symmetric(150, 8.0)
    b = np.random.default_rng(2).standard_normal(150)
    first = PardisoFactor(A, threads=1)
    # new values on the same pattern: the analysis is taken over, the answer is the new matrix's
    B = A.copy()
    B.data = B.data * 1.5 + 0.1
    second = PardisoFactor(B, threads=1, reuse=first)
    assert second.reused_analysis
    np.testing.assert_allclose(second.solve(b), np.linalg.solve(B.toarray(), b), rtol=1e-9, atol=1e-12)
    with pytest.raises(pardiso.PardisoError, match="released"):
        first.solve(b)   # its handle now belongs to the new factor
    # another pattern: a fresh analysis (and the earlier factor is released all the same)
    C = _symmetric(150, 8.0, seed=5)
    third = PardisoFactor(C, threads=1, reuse=second)
    assert not third.reused_analysis
    np.testing.assert_allclose(third.solve(b), np.linalg.solve(C.toarray(), b), rtol=1e-9, atol=1e-12)
    with pytest.raises(pardiso.PardisoError, match="released"):
        second.solve(b)


def test_a_single_precision_factor_is_a_float32_solve_with_float64_results():
    A = _symmetric(150, 8.0)
    b = np.random.default_rng(3).standard_normal(150)
    f = PardisoFactor(A, threads=1, single=True)
    x = f.solve(b)
    exact = np.linalg.solve(A.toarray(), b)
    err = np.linalg.norm(x - exact) / np.linalg.norm(exact)
    assert x.dtype == np.float64 and 1e-12 < err < 1e-4   # float32 round-off: neither exact nor wrong
    # a double factor cannot take over a single one's analysis
    assert not PardisoFactor(A, threads=1, reuse=f).reused_analysis


def test_adding_on_the_hessians_pattern_keeps_its_explicit_zeros():
    from metaphys.optim.newton import add_on_pattern
    A = sp.csr_matrix((np.array([1.0, 0.0, 0.0, 2.0]), np.array([0, 1, 0, 1]), np.array([0, 2, 4])), shape=(2, 2))
    B = sp.csr_matrix(np.array([[0.5, 0.0], [0.0, 0.25]]))
    out = add_on_pattern(A, B)
    assert out.nnz == 4 and np.array_equal(out.indices, A.indices)   # scipy's A + B would drop the zeros
    np.testing.assert_array_equal(out.toarray(), (A + B).toarray())
    outside = sp.csr_matrix(np.array([[0.0, 0.0], [3.0, 0.0]]))   # an entry off A2's pattern
    A2 = sp.csr_matrix(np.diag([1.0, 2.0]))
    np.testing.assert_array_equal(add_on_pattern(A2, outside).toarray(), (A2 + outside).toarray())


def test_the_cloths_lagged_factor_is_refactored_on_one_analysis():
    prob = _hanging_cloth()
    made = []
    original = PardisoFactor.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self.reused_analysis)

    solver = NewtonSolver(tol=1e-10, max_iterations=100, linear="pcg", refactor_after=1)
    PardisoFactor.__init__ = spy
    try:
        out = solver.solve(prob, torch.zeros(prob.shape, dtype=torch.float64))
    finally:
        PardisoFactor.__init__ = original
    assert out.converged and len(made) >= 2
    assert made[0] is False and all(made[1:]), made   # one analysis, then numbers only


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


def test_a_csr_pattern_seen_before_is_read_without_rebuilding_its_upper_triangle():
    # Newton's Hessians share one pattern per grid; the upper triangle's index arrays are found once
    pardiso._UPPER.clear()
    A = _symmetric(60, 8.0, seed=3)
    A = (A + sp.diags(np.zeros(60))).tocsr()     # every diagonal entry stored
    A.sort_indices()
    B = sp.csr_matrix((A.data * 1.5, A.indices.copy(), A.indptr.copy()), shape=A.shape)   # same pattern, new arrays
    fa = PardisoFactor(A)
    assert len(pardiso._UPPER) == 1
    fb = PardisoFactor(B, reuse=fa)
    assert len(pardiso._UPPER) == 1 and fb.reused_analysis    # the cached triangle, and the analysis reused
    b = np.arange(60, dtype=np.float64)
    assert np.allclose(fb.solve(b), np.linalg.solve(B.toarray(), b), rtol=1e-10, atol=1e-12)
    # a pattern without its diagonal entries takes the general path (PARDISO's storage needs them)
    C = sp.csr_matrix(np.array([[0.0, 2.0], [2.0, 0.0]]))
    assert pardiso._upper_pattern(C) is None
    assert np.allclose(PardisoFactor(C).solve(np.array([2.0, 4.0])), [2.0, 1.0])


def test_a_definite_factor_is_cholesky_and_refuses_an_indefinite_matrix():
    b = np.random.default_rng(4).standard_normal(120)
    spd = _symmetric(120, 8.0)
    assert np.linalg.eigvalsh(spd.toarray()).min() > 0
    chol = PardisoFactor(spd, threads=1, definite=True)
    np.testing.assert_allclose(chol.solve(b), np.linalg.solve(spd.toarray(), b), rtol=1e-9, atol=1e-12)
    # LDL^T cannot take over a Cholesky analysis (another matrix type), nor the other way round
    assert not PardisoFactor(spd, threads=1, reuse=chol).reused_analysis
    indefinite = _symmetric(120, 0.5)
    assert np.linalg.eigvalsh(indefinite.toarray()).min() < 0
    with pytest.raises(pardiso.PardisoError, match="zero pivot|-4"):
        PardisoFactor(indefinite, threads=1, definite=True)
    # a refused Cholesky that took over an earlier analysis leaves nothing half-owned behind
    first = PardisoFactor(spd, threads=1, definite=True)
    B = spd.copy()
    B.data = B.data - 0.0
    B = (B - sp.diags(np.full(120, 7.5))).tocsr()     # same pattern, now indefinite
    with pytest.raises(pardiso.PardisoError):
        PardisoFactor(B, threads=1, reuse=first, definite=True)
    with pytest.raises(pardiso.PardisoError, match="released"):
        first.solve(b)


def test_a_refused_cholesky_keeps_its_analysis_for_the_next_one():
    """A Cholesky refused for a non-positive pivot hands back its symbolic analysis (PardisoRefused):
    it cannot solve, and a later Cholesky of a definite matrix with the same pattern takes it over and
    factors that matrix exactly (contact frames switch kinds; each new analysis costs ~3 factorizations)."""
    b = np.random.default_rng(5).standard_normal(120)
    spd = _symmetric(120, 8.0)
    indefinite = (spd - sp.diags(np.full(120, 7.5))).tocsr()     # same pattern, not definite
    assert np.linalg.eigvalsh(indefinite.toarray()).min() < 0
    for reuse in (None, PardisoFactor(spd, threads=1, definite=True)):   # fresh analysis, or one taken over
        with pytest.raises(pardiso.PardisoRefused, match="zero pivot|-4") as refused:
            PardisoFactor(indefinite, threads=1, reuse=reuse, definite=True)
        kept = refused.value.analysis
        with pytest.raises(pardiso.PardisoError, match="refused"):
            kept.solve(b)
        again = PardisoFactor(spd, threads=1, reuse=kept, definite=True)
        assert again.reused_analysis
        np.testing.assert_allclose(again.solve(b), np.linalg.solve(spd.toarray(), b), rtol=1e-9, atol=1e-12)
    # LDL^T factors the indefinite matrix itself (nothing is refused there)
    ldlt = PardisoFactor(indefinite, threads=1)
    np.testing.assert_allclose(ldlt.solve(b), np.linalg.solve(indefinite.toarray(), b), rtol=1e-8, atol=1e-10)


def test_the_lagged_factor_keeps_one_analysis_per_kind():
    """Newton-Krylov's lagged factor switches between Cholesky and LDL^T on contact frames: the factor of
    the other kind is kept as a spare, so switching back reuses its analysis instead of analysing again."""
    from metaphys.optim.newton import LaggedFactor
    spd = _symmetric(120, 8.0)
    pc = LaggedFactor()
    ldlt = PardisoFactor(spd, threads=1)
    assert pc.reusable(ldlt, pardiso.MTYPE_SYMMETRIC_DEFINITE) is None          # no Cholesky analysis yet
    assert pc.spares[pardiso.MTYPE_SYMMETRIC_INDEFINITE] is ldlt                 # kept, not released
    chol = PardisoFactor(spd, threads=1, definite=True)
    back = pc.reusable(chol, pardiso.MTYPE_SYMMETRIC_INDEFINITE)
    assert back is ldlt and pc.spares[pardiso.MTYPE_SYMMETRIC_DEFINITE] is chol
    assert PardisoFactor(spd, threads=1, reuse=back).reused_analysis
    assert pc.reusable(None, pardiso.MTYPE_SYMMETRIC_DEFINITE) is chol and not pc.spares
    # a new spare of a kind releases the one it replaces
    older, newer = PardisoFactor(spd, threads=1), PardisoFactor(spd, threads=1)
    pc.keep_spare(older)
    pc.keep_spare(newer)
    assert older._released and not newer._released and pc.spares[pardiso.MTYPE_SYMMETRIC_INDEFINITE] is newer


def test_the_lagged_factor_falls_back_to_ldlt_where_the_projected_hessian_is_indefinite(monkeypatch):
    """Newton-Krylov tries Cholesky for its lagged factor; a refusal is counted, LDL^T factors that
    matrix, and the next INDEFINITE_AFTER_REFUSAL factorizations skip Cholesky. The answer is the
    LDL^T-only solver's."""
    from metaphys.optim import newton
    prob = _hanging_cloth()
    a0 = torch.zeros(prob.shape, dtype=torch.float64)
    calls = []
    original = PardisoFactor.__init__

    def refuse_first_cholesky(self, A, *args, definite=False, **kwargs):
        calls.append(definite)
        if definite and calls.count(True) == 1:
            raise pardiso.PardisoError("PARDISO phase 12 failed with error -4: zero pivot (test)")
        original(self, A, *args, definite=definite, **kwargs)

    monkeypatch.setattr(PardisoFactor, "__init__", refuse_first_cholesky)
    monkeypatch.setattr(newton, "INDEFINITE_AFTER_REFUSAL", 2)
    solver = NewtonSolver(tol=1e-10, max_iterations=100, linear="pcg", refactor_after=1)
    out = solver.solve(prob, a0)
    assert out.converged and solver.preconditioner.definite_refusals == 1
    # refused, LDL^T for that matrix, LDL^T twice more, then Cholesky again
    assert calls[:5] == [True, False, False, False, True], calls
    monkeypatch.setattr(PardisoFactor, "__init__", original)
    ldlt = NewtonSolver(tol=1e-10, max_iterations=100, linear="pcg", refactor_after=1, factorization="superlu").solve(prob, a0)
    assert float((out.u - ldlt.u).abs().max()) <= 1e-6 * float(ldlt.u.abs().max())


def test_prepare_loads_the_kernels_and_mkl_before_the_first_frame(monkeypatch):
    """NewtonSolver.prepare (called when a sim is built) imports the compiled kernels and runs MKL's
    first factorization, so the first frame does not pay for them."""
    from metaphys import _ops
    monkeypatch.setitem(_ops._state, "loaded", False)     # as in a fresh process
    monkeypatch.setitem(_ops._state, "module", None)
    made = []
    original = PardisoFactor.__init__

    def spy(self, A, *args, **kwargs):
        made.append((A.shape, kwargs.get("definite"), kwargs.get("single")))
        original(self, A, *args, **kwargs)

    monkeypatch.setattr(PardisoFactor, "__init__", spy)
    NewtonSolver(linear="pcg").prepare(_hanging_cloth(8))
    assert _ops._state["loaded"] and _ops._state["module"] is not None
    assert made == [((2, 2), True, True)]                  # float32 Cholesky, as the lagged factor
