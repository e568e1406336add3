"""The subspace acceleration (optim/accelerate.py) and its switch in solve / TimeStepper / sims."""
import pytest
import torch

from metaphys.eval import cases
from metaphys.optim.accelerate import SubspaceAccelerator
from metaphys.optim.baselines import TorchOptimizer
from metaphys.optim.solve import TimeStepper, solve
from metaphys.sims.common import SolverSettings
from metaphys.problems.grid import make_laplace

F64 = torch.float64


def _spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return a @ a.T + d * torch.eye(d, dtype=F64), torch.randn(d, generator=g, dtype=F64)


@pytest.mark.parametrize("model", ["energy", "gradient"])
def test_minimizer_of_a_quadratic_from_a_full_history(model):
    """With d+1 points spanning R^d, both models land on the quadratic's minimizer exactly."""
    d = 6
    h, b = _spd(d, 0)
    pts = torch.randn(d + 1, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    acc = SubspaceAccelerator(memory=d, model=model)
    grad = lambda u: u @ h - b
    for u in pts[:-1]:
        acc.push(u.view(1, 1, 1, d), grad(u).view(1, 1, 1, d))
    up = pts[-1].view(1, 1, 1, d)
    got = up + acc.propose(up, grad(pts[-1]).view(1, 1, 1, d))
    assert torch.allclose(got.flatten(), torch.linalg.solve(h, b), rtol=0, atol=1e-10)


def test_memory_is_a_ring():
    acc = SubspaceAccelerator(memory=2)
    g = torch.Generator().manual_seed(2)
    u = lambda: torch.randn(2, 1, 4, 4, generator=g, dtype=F64)
    for _ in range(5):
        acc.push(u(), u())
    assert acc._count == 2
    assert float(acc.propose(*[u(), u()]).abs().max()) > 0.0
    empty = SubspaceAccelerator(memory=2)
    assert float(empty.propose(u(), u()).abs().max()) == 0.0     # no history: the optimizer's own step


def test_bad_memory_or_model_is_a_clear_error():
    with pytest.raises(ValueError, match="subspace memory"):
        SubspaceAccelerator(memory=0)
    with pytest.raises(ValueError, match="subspace model"):
        SubspaceAccelerator(memory=3, model="newton")
    with pytest.raises(ValueError, match=r"accelerate=...\): expected an integer >= 0"):
        SolverSettings(accelerate=-1)


def test_accelerated_gradient_descent_converges_where_plain_stalls():
    """Gradient descent (lr 1) on Laplace 32^2 stalls near 20 % of its start after 60 steps; with
    the subspace acceleration (energy model, CG-like on the symmetric operator) it falls far below."""
    problem = make_laplace(2, 32, 32, torch.Generator().manual_seed(0))
    plain = solve(problem, TorchOptimizer("sgd", 1.0), iterations=60, accelerate=0)
    fast = solve(problem, TorchOptimizer("sgd", 1.0), iterations=60, accelerate=20)
    start = plain.residuals[0]
    assert bool((plain.residual > 0.1 * start).all())
    assert bool((fast.residual < 1e-3 * start).all())
    assert bool((fast.residual < 1e-3 * plain.residual).all())


def test_nonsymmetric_time_step_converges_with_the_gradient_model():
    """Advection-diffusion (D = 0.1, non-symmetric): 40 steps of gradient descent per time step
    leave the residual near 1e-4; the GMRES-like gradient model takes it to round-off."""
    def run(m):
        stepper = TimeStepper(cases.diffusion_rotating(32, 0.1), TorchOptimizer("sgd", 5.0),
                              iterations_per_step=40, accelerate=m)
        return max(float(stepper.step().residual_end.max()) for _ in range(2))
    plain, fast = run(0), run(20)
    assert plain > 1e-5
    assert fast < 1e-18


class Recording:
    """A problem wrapper that records every loss evaluation."""

    def __init__(self, problem):
        self.problem, self.losses = problem, []

    def __getattr__(self, name):
        return getattr(self.problem, name)

    def loss_and_grad(self, u):
        loss, grad = self.problem.loss_and_grad(u)
        self.losses.append(loss.clone())
        return loss, grad


def test_each_iteration_keeps_the_better_of_the_step_and_the_candidate():
    """Evaluations alternate: the optimizer's point, then the candidate; the residual after each
    iteration is the smaller of the two, so the acceleration never makes an iteration worse."""
    problem = Recording(make_laplace(2, 24, 24, torch.Generator().manual_seed(3)))
    res = solve(problem, TorchOptimizer("sgd", 3.0), iterations=12, accelerate=4)
    losses = torch.stack(problem.losses)
    assert losses.shape[0] == 1 + 2 * 12
    for k in range(1, 13):
        own, cand = losses[2 * k - 1], losses[2 * k]
        assert torch.equal(res.residuals[k], torch.minimum(own, cand))
    assert bool((losses[2::2] < losses[1::2]).any())     # the candidate won somewhere
