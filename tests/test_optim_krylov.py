"""metaphys.optim.krylov: FGMRES on linear (advection-)diffusion problems against a dense direct
solve, against plain Metamizer iterations, per-sample stopping, preconditioners, bad input."""
import pytest
import torch

from metaphys.optim.krylov import ResidualOperator, fgmres, jacobi_preconditioner, metamizer_preconditioner
from metaphys.optim.solve import iterate
from metaphys.physics import DiffusionProblem, frame_mask

F64 = torch.float64


def _problem(n=16, D=0.1, seed=0):
    """Two samples: a rigid rotation and a uniform drift (both non-symmetric), random bc/source."""
    g = torch.Generator().manual_seed(seed)
    ii, jj = torch.meshgrid(torch.arange(n, dtype=F64), torch.arange(n, dtype=F64), indexing="ij")
    a, b = 2 * (ii / n - 0.5), 2 * (jj / n - 0.5)
    rotation = torch.stack([-1.5 * b, 1.5 * a])
    drift = torch.stack([torch.full_like(a, 1.5), torch.full_like(a, -1.0)])
    vel = torch.stack([rotation, drift])
    rand = lambda: torch.rand(2, 1, n, n, generator=g, dtype=F64)
    return DiffusionProblem(frame_mask(2, n, n), rand(), c_old=rand(), velocity=vel, source=rand(), D=D)


def _dense_solution(p):
    """c on the free cells from torch.linalg.solve on A built column by column from the residual."""
    op = ResidualOperator(p)
    n, _, h, w = p.shape
    free = (1 - p.fields["mask"]).flatten(1).bool()
    rhs = -p.residual_field(p.impose(torch.zeros(p.shape, dtype=F64)))
    out = p.impose(torch.zeros(p.shape, dtype=F64)).clone()
    for s in range(n):
        cols = []
        for k in range(h * w):
            e = torch.zeros(p.shape, dtype=F64)
            e.view(n, -1)[s, k] = 1
            cols.append(op(e)[s].flatten())
        A = torch.stack(cols, 1)[free[s]][:, free[s]]
        x = torch.linalg.solve(A, rhs[s].flatten()[free[s]])
        out.view(n, -1)[s, free[s]] = x
    return out, op


def test_fgmres_matches_dense_direct_solve():
    p = _problem()
    exact, _ = _dense_solution(p)
    res = fgmres(p, rtol=1e-13, restart=30, max_iterations=400)
    assert bool(res.converged.all())
    assert float((res.u - exact).abs().max()) <= 1e-10 * float(exact.abs().max())
    # the recursive estimate was checked against the true residual at each restart
    assert float(res.residual_norm.max()) <= 1e-13 * float(res.residual_norms[0].max()) * 1.01


def test_jacobi_probe_finds_the_exact_diagonal():
    p = _problem(D=2.0)
    _, op = _dense_solution(p)
    free = 1 - p.fields["mask"]
    diag = torch.zeros(p.shape, dtype=F64)
    for k in range(16 * 16):
        e = torch.zeros(p.shape, dtype=F64)
        e.view(2, -1)[:, k] = 1
        diag.view(2, -1)[:, k] = op(e).view(2, -1)[:, k]
    z = jacobi_preconditioner(p)(free.clone())
    assert torch.allclose(z[free.bool()], 1 / diag[free.bool()], rtol=1e-12)
    res = fgmres(p, rtol=1e-12, preconditioner=jacobi_preconditioner(p))
    assert bool(res.converged.all())


def test_fgmres_reaches_tight_tolerance_where_first_order_iterations_stall():
    from metaphys.optim.baselines import TorchOptimizer
    p = _problem(n=32, D=0.1, seed=3)
    start = p.residual(p.initial_guess())
    res = fgmres(p, rtol=1e-12, max_iterations=200)
    assert bool(res.converged.all()) and res.iterations < 200
    free = (1 - p.fields["mask"]).flatten(1).sum(1)
    krylov_msr = res.residual_norm ** 2 / free
    adam = TorchOptimizer("adam", lr=0.05)
    plain = iterate(p, adam, p.initial_guess(), adam.init_state(p.shape), iterations=res.iterations, guard=True)
    # the same number of first-order iterations as GMRES products leaves the MSR many decades higher
    # (the shipped Metamizer is no longer a stalling baseline here: it reaches round-off on some seeds)
    assert bool((krylov_msr <= 1e-20 * start).all())
    assert bool((plain.residual > 1e6 * krylov_msr).all()), (plain.residual, krylov_msr)


def test_metamizer_preconditioned_fgmres_converges_on_nonsymmetric_case(shipped_optimizer):
    p = _problem(n=32, D=0.1, seed=5)
    res = fgmres(p, rtol=1e-8, max_iterations=150, preconditioner=metamizer_preconditioner(p, shipped_optimizer, 2))
    assert bool(res.converged.all()), res.residual_norm
    exact = fgmres(p, rtol=1e-13, max_iterations=400).u
    assert float((res.u - exact).abs().max()) <= 1e-6 * float(exact.abs().max())


def test_per_sample_atol_and_warm_start():
    p = _problem(seed=7)
    exact = fgmres(p, rtol=1e-13, max_iterations=400).u
    u0 = exact.clone()
    u0[1] = p.initial_guess()[1]          # sample 0 starts at its solution, sample 1 does not
    atol = torch.tensor([1e-6, 1e-6], dtype=F64)
    res = fgmres(p, u0, rtol=0.0, atol=atol)
    assert bool(res.converged.all())
    assert torch.equal(res.u[0], exact[0]) or float((res.u[0] - exact[0]).abs().max()) < 1e-12
    assert bool((res.residual_norm <= atol).all())
    looser = fgmres(p, u0, rtol=0.0, atol=atol * 1e4)
    assert looser.iterations < res.iterations


def test_bad_input_is_named():
    class NotLinear:
        shape = (1, 1, 16, 16)

    with pytest.raises(TypeError, match="residual_field"):
        fgmres(NotLinear())
    p = _problem()
    with pytest.raises(ValueError, match="restart"):
        fgmres(p, restart=0)
    with pytest.raises(ValueError, match="rtol"):
        fgmres(p, rtol=-1.0)
    with pytest.raises(ValueError, match="steps"):
        metamizer_preconditioner(p, object(), steps=0)
