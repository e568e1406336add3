"""The Metamizer wrapper: scale invariance, unit equivariance, state, divergence handling."""
import math

import pytest
import torch

from metaphys.optim.metamizer import Metamizer, MetamizerNet, MetamizerState
from metaphys.optim.solve import DivergenceError, solve
from metaphys.physics import LaplaceProblem, frame_mask
from metaphys.problems.grid import make_laplace


def _net(seed=0, hidden=6):
    torch.manual_seed(seed)
    net = MetamizerNet(hidden=hidden).eval()
    # Non-trivial BatchNorm statistics so eval mode is not the identity.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


class ScaledLoss:
    """A problem whose loss (and gradient) is multiplied by c."""

    def __init__(self, problem, c):
        self.p, self.c = problem, c

    def __getattr__(self, name):
        return getattr(self.p, name)

    def loss_and_grad(self, u):
        loss, grad = self.p.loss_and_grad(u)
        return self.c * loss, self.c * grad


def _steps(problem, net, iterations=20, initial_scale=0.05):
    opt = Metamizer(net, initial_scale=initial_scale)
    u = problem.initial_guess()
    state = opt.init_state(tuple(u.shape))
    steps = []
    for _ in range(iterations):
        _, g = problem.loss_and_grad(u)
        step, state = opt.step(g, state)
        steps.append(step)
        u = problem.apply(u, step)
    return torch.stack(steps)


@pytest.fixture(scope="module")
def poisson():
    gen = torch.Generator().manual_seed(3)
    return make_laplace(2, 24, 20, gen)


@pytest.mark.parametrize("c", [2.0 ** -20, 2.0 ** 20])
def test_loss_scale_invariance_exact_for_powers_of_two(poisson, c):
    net = _net()
    ref = _steps(poisson, net)
    got = _steps(ScaledLoss(poisson, c), net)
    assert torch.equal(ref, got)


@pytest.mark.parametrize("c", [1e-6, 1e-3, 1e3, 1e6])
def test_loss_scale_invariance(poisson, c):
    net = _net()
    ref = _steps(poisson, net)
    got = _steps(ScaledLoss(poisson, c), net)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5


@pytest.mark.parametrize("k", [1e-4, 0.5, 8.0, 1e5])
def test_unit_equivariance(poisson, k):
    """bc, f and s0 multiplied by k -> every step multiplied by k."""
    net = _net(1)
    ref = _steps(poisson, net)
    scaled = LaplaceProblem(poisson.fields["mask"], k * poisson.fields["bc"], k * poisson.fields["f"])
    got = _steps(scaled, net, initial_scale=0.05 * k)
    assert float((got / k - ref).abs().max() / ref.abs().max()) < 1e-5


def test_random_model_runs_without_nan_and_state_shapes():
    gen = torch.Generator().manual_seed(5)
    problem = make_laplace(3, 17, 23, gen)
    problem.fields["f"] = 0.1 * torch.randn(problem.fields["f"].shape, generator=gen, dtype=torch.float64)
    opt = Metamizer(_net(2))
    res = solve(problem, opt, iterations=20, guard=True)
    assert res.iterations == 20
    assert torch.isfinite(res.u).all()
    assert res.history().shape == (21, 3)
    st = res.state
    assert st.prev_grad.shape == (3, 1, 17, 23) and st.prev_step.shape == (3, 1, 17, 23)
    assert st.scale.shape == (3,) and st.scale.dtype == torch.float64 and (st.scale > 0).all()


def test_state_reset_per_sample():
    st = MetamizerState.fresh(4, 16, 16)
    st.prev_grad += 1
    st.prev_step += 2
    st.scale *= 10
    st.reset(torch.tensor([1, 3]))
    assert st.prev_grad[1].abs().sum() == 0 and st.prev_grad[0].abs().sum() > 0
    assert st.scale.tolist() == pytest.approx([0.5, 0.05, 0.5, 0.05])


def test_channel_split_gives_each_channel_its_own_scale():
    opt = Metamizer(_net(3))
    st = opt.init_state((2, 3, 16, 16))
    g = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    g[:, 1] *= 1e6  # channel scale must not leak into the others
    step, st2 = opt.step(g, st)
    assert step.shape == (2, 3, 16, 16) and st2.scale.shape == (6,)
    step_b, _ = opt.step(g * torch.tensor([1.0, 1e-6, 1.0]).view(1, 3, 1, 1).double(), st)
    assert torch.allclose(step, step_b, rtol=1e-5, atol=0)


class Exploding:
    """An optimizer that always proposes a step of 1e8 along the gradient (uphill)."""

    name = "exploding"

    def init_state(self, shape, device=None):
        return MetamizerState.fresh(shape[0] * shape[1], shape[2], shape[3])

    def step(self, grad, state):
        return 1e8 * grad / grad.abs().max().clamp_min(1e-300), state

    @staticmethod
    def shrink(state, factor):
        pass


def test_divergence_raises_clear_error():
    problem = make_laplace(1, 20, 20, torch.Generator().manual_seed(0))
    with pytest.raises(DivergenceError, match="diverged at iteration"):
        solve(problem, Exploding(), iterations=20)


def test_guard_rejects_bad_steps_and_never_returns_nan():
    problem = make_laplace(2, 20, 20, torch.Generator().manual_seed(0))
    res = solve(problem, Exploding(), iterations=5, guard=True)
    assert torch.isfinite(res.u).all()
    assert res.guard_rejections > 0
    start = float(res.residuals[0].max())
    assert float(res.residual.max()) <= 2 * start


def test_tolerance_stops_and_reports_cap():
    problem = make_laplace(1, 20, 20, torch.Generator().manual_seed(0))
    res = solve(problem, Metamizer(_net()), tol=1e-30, max_iterations=7)
    assert res.iterations == 7 and res.hit_cap
    res2 = solve(problem, Metamizer(_net()), tol=1e3, max_iterations=7)
    assert res2.iterations == 0 and not res2.hit_cap


def test_too_small_grid_is_rejected():
    problem = LaplaceProblem(frame_mask(1, 8, 8), 0.0)
    with pytest.raises(ValueError, match="at least 16x16"):
        solve(problem, Metamizer(_net()), iterations=1)
