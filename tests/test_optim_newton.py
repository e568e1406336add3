"""Newton's method (the converged reference): exact sparse Hessian, convergence on small cloths."""
import numpy as np
import pytest
import torch

from metaphys.optim.newton import NewtonError, NewtonSolver, linear_coloring, sparse_hessian
from metaphys.physics import LaplaceProblem, frame_mask
from metaphys.physics.cloth import ClothProblem, rest_grid


def _hanging_cloth(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = rest_grid(1, n, n, rotation=torch.tensor([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]], dtype=torch.float64))
    x = x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)  # not at rest: all terms active
    w = torch.zeros(1, 1, n, n, dtype=torch.float64)
    w[..., 0, 0] = w[..., 0, -1] = 1.0
    return ClothProblem(x, pin_w=w, gravity=(0.0, 0.0, -0.5), wind=(0.0, 0.1, 0.0), k_stretch=500.0, k_shear=10.0,
                        k_bend=1.0, damping=0.1, spheres=[[n / 2, 3.0, -n / 2, 4.0]])


def test_coloring_separates_every_coupled_pair():
    offsets = ClothProblem.hessian_offsets
    m, q = linear_coloring(offsets)
    pts = [(0, 0)] + list(offsets)
    assert len({(a + q * b) % m for a, b in pts}) == len(pts)
    assert m < 25  # better than the 5x5 block coloring


# exact products; central differences of the exact kernel gradient (measured ~1e-10 relative)
@pytest.mark.parametrize("method,rel", [("autograd", 1e-10), ("difference", 1e-8), ("analytic", 1e-10), ("auto", 1e-10)])
def test_sparse_hessian_matches_autograd_hessian_vector_products(method, rel):
    prob = _hanging_cloth()
    a = 0.01 * torch.randn(prob.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = prob.impose(a)
    H = sparse_hessian(prob, a, method=method)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(a.shape, dtype=torch.float64, generator=g)
        aa = a.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(prob.pure_loss(aa).sum(), aa, create_graph=True)
        (hv,) = torch.autograd.grad((grad * v).sum(), aa)
        hv_sparse = H @ v.flatten().numpy()
        assert np.abs(hv_sparse - hv.flatten().numpy()).max() <= rel * np.abs(hv_sparse).max()
    assert abs(H - H.T).max() <= 1e-12 * abs(H).max()


def test_pure_loss_gradient_equals_the_kernel_gradient():
    prob = _hanging_cloth()
    a = torch.zeros(prob.shape, dtype=torch.float64)
    aa = a.clone().requires_grad_(True)
    (g_pure,) = torch.autograd.grad(prob.pure_loss(aa).sum(), aa)
    _, g_kernel = prob.loss_and_grad(a)
    assert torch.allclose(g_pure, g_kernel, rtol=0, atol=1e-12 * float(g_kernel.abs().max()))


def test_newton_reaches_a_tight_gradient_tolerance_on_a_small_cloth():
    prob = _hanging_cloth()
    out = NewtonSolver(tol=1e-12, max_iterations=60).solve(prob, prob.initial_guess())
    assert out.converged and out.residuals[-1] <= 1e-12
    _, grad = prob.loss_and_grad(out.u)
    assert float(grad.norm()) / grad.numel() ** 0.5 < 1e-10 * prob.residual_scale(grad) + 1e-300 or out.converged
    # factorizations are reused while they cut the residual >= 2x per step: fewer Hessians than steps
    assert 0 < out.hessians < out.iterations and out.chord_steps > 0
    r = out.residuals
    assert r[-1] < 1e-6 * r[len(r) // 2]  # and the tail still converges fast


def test_newton_refuses_problems_without_a_twice_differentiable_loss():
    prob = LaplaceProblem(frame_mask(1, 16, 16), torch.zeros(1, 1, 16, 16, dtype=torch.float64))
    with pytest.raises(NewtonError, match="pure_loss"):
        NewtonSolver(hessian="autograd").solve(prob, prob.initial_guess())
    with pytest.raises(NewtonError, match="hessian_offsets"):
        NewtonSolver().solve(prob, prob.initial_guess())
    with pytest.raises(ValueError, match="hessian"):
        NewtonSolver(hessian="exact")


def test_both_hessians_give_the_same_converged_answer():
    prob = _hanging_cloth()
    outs = [NewtonSolver(tol=1e-11, max_iterations=60, hessian=h).solve(prob, prob.initial_guess())
            for h in ("autograd", "difference", "analytic")]
    assert all(o.converged for o in outs)
    scale = float(outs[0].u.abs().max())
    for other in outs[1:]:
        assert float((outs[0].u - other.u).abs().max()) <= 1e-8 * scale


def test_a_missed_tolerance_with_the_difference_hessian_is_retried_exactly():
    prob = _hanging_cloth()
    short = NewtonSolver(tol=1e-12, max_iterations=2, hessian="difference").solve(prob, prob.initial_guess())
    assert not short.converged and short.exact_retry
    assert short.iterations == 4                     # both attempts are counted
    full = NewtonSolver(tol=1e-11, max_iterations=60, hessian="difference").solve(prob, prob.initial_guess())
    assert full.converged and not full.exact_retry   # the fast path alone when it converges
    # the analytic Hessian is exact: nothing to retry
    analytic = NewtonSolver(tol=1e-12, max_iterations=2, hessian="analytic").solve(prob, prob.initial_guess())
    assert not analytic.converged and not analytic.exact_retry and analytic.iterations == 2


# --- Newton-Krylov (linear="pcg"): CG with a lagged factorization as the preconditioner ---------------
from metaphys.optim.newton import preconditioned_cg  # noqa: E402


def _spd(n=30, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    return a @ a.T + n * np.eye(n), rng.standard_normal(n)


def test_pcg_with_the_exact_inverse_as_preconditioner_solves_in_one_iteration():
    H, g = _spd()
    d, k, status = preconditioned_cg(lambda v: H @ v, g, lambda r: np.linalg.solve(H, r), 1e-10, 50)
    assert status == "converged" and k == 1
    assert np.allclose(H @ d, -g, atol=1e-9 * np.abs(g).max())


def test_pcg_with_a_poor_preconditioner_still_converges_and_counts_iterations():
    H, g = _spd()
    d, k, status = preconditioned_cg(lambda v: H @ v, g, lambda r: r, 1e-10, 200)
    assert status == "converged" and 1 < k <= 60
    assert np.linalg.norm(H @ d + g) <= 1e-9 * np.linalg.norm(g)


def test_pcg_stops_at_negative_curvature_with_a_downhill_direction():
    H, g = _spd()
    H = H - 2.5 * np.abs(np.linalg.eigvalsh(H)).max() * np.outer(g, g) / (g @ g)   # indefinite along g
    d, k, status = preconditioned_cg(lambda v: H @ v, g, lambda r: r, 1e-10, 50)
    assert status == "negative_curvature"
    assert float(g @ d) < 0


def test_pcg_refuses_a_preconditioner_that_is_not_positive():
    H, g = _spd()
    _, k, status = preconditioned_cg(lambda v: H @ v, g, lambda r: -r, 1e-10, 50)
    assert status == "bad_preconditioner" and k == 0


def test_newton_krylov_reaches_the_direct_solvers_answer():
    prob = _hanging_cloth()
    a0 = torch.zeros(prob.shape, dtype=torch.float64)
    direct = NewtonSolver(tol=1e-10, max_iterations=100).solve(prob, a0)
    krylov = NewtonSolver(tol=1e-10, max_iterations=100, linear="pcg").solve(prob, a0)
    assert direct.converged and krylov.converged
    assert krylov.krylov_iterations > 0 and krylov.hessians <= krylov.iterations
    assert float((direct.u - krylov.u).abs().max()) <= 1e-6 * float(direct.u.abs().max())


def test_the_lagged_factor_is_reused_by_the_next_solve():
    prob = _hanging_cloth()
    # refactor_after = the CG cap: the first solve's last CG may be long without leaving the factor stale
    solver = NewtonSolver(tol=1e-8, max_iterations=100, linear="pcg", refactor_after=40)
    a = solver.solve(prob, torch.zeros(prob.shape, dtype=torch.float64)).u
    assert not solver.preconditioner.stale
    before = solver.preconditioner.factorizations
    again = solver.solve(prob, a + 1e-4 * prob.impose(torch.ones_like(a)))   # a nearby start: same Hessian
    assert again.converged and again.hessians == 0
    assert solver.preconditioner.factorizations == before


def test_a_solve_at_its_iteration_budget_keeps_the_lowest_energy_iterate_and_says_so():
    prob = _hanging_cloth()
    out = NewtonSolver(tol=1e-14, max_iterations=2, linear="pcg").solve(prob, torch.zeros(prob.shape, dtype=torch.float64))
    assert not out.converged and out.budget_hit == "iterations" and out.iterations == 2
    start = prob.loss_and_grad(torch.zeros(prob.shape, dtype=torch.float64))[0]
    assert float(prob.loss_and_grad(out.u)[0][0]) < float(start[0])   # the lowest energy reached


def test_a_solve_at_its_time_budget_stops_and_says_so():
    prob = _hanging_cloth()
    out = NewtonSolver(tol=1e-14, max_iterations=1000, linear="pcg", time_budget=1e-9).solve(
        prob, torch.zeros(prob.shape, dtype=torch.float64))
    assert not out.converged and out.budget_hit == "time" and out.iterations <= 1


def test_newton_refuses_unknown_linear_solvers_and_budgets():
    with pytest.raises(ValueError, match="linear must be one of"):
        NewtonSolver(linear="lu")
    with pytest.raises(ValueError, match="time_budget"):
        NewtonSolver(time_budget=0)


def test_krylov_hessian_choice_is_checked_and_both_reach_the_answer():
    with pytest.raises(ValueError, match="krylov_hessian must be one of"):
        NewtonSolver(linear="pcg", krylov_hessian="psd")
    prob = _hanging_cloth()
    a0 = torch.zeros(prob.shape, dtype=torch.float64)
    outs = [NewtonSolver(tol=1e-10, max_iterations=100, linear="pcg", krylov_hessian=h).solve(prob, a0)
            for h in ("projected", "exact")]
    assert all(o.converged for o in outs)
    assert float((outs[0].u - outs[1].u).abs().max()) <= 1e-6 * float(outs[1].u.abs().max())
