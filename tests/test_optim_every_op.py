"""metaphys.solve / TimeStepper drive every physics op with any optimizer behind the interface."""
import pytest
import torch

from metaphys.optim.baselines import TorchOptimizer
from metaphys.optim.metamizer import Metamizer, MetamizerNet
from metaphys.optim.solve import TimeStepper, solve
from metaphys import problems
from metaphys.eval import cases
from metaphys.registry import BY_NAME

SIZE = {"cloth": 16}  # else 20


def make_problem(name):
    """A small problem of every registry op: its first training generator, else its eval case."""
    op, size = BY_NAME[name], SIZE.get(name, 20)
    if op.generators:
        return problems.get(op.generators[0])(1, size, size, torch.Generator().manual_seed(1))
    builder, kwargs = op.eval_case
    made = getattr(cases, builder)(size, **kwargs)
    if isinstance(made, tuple):  # time-dependent scenery: move it once for a non-zero residual to work on
        problem, hook = made
        hook(problem, 3)
        return problem
    return made


def _metamizer(dims: int = 2):
    torch.manual_seed(0)
    return Metamizer(MetamizerNet(hidden=4, dims=dims).eval())


def _optimizer(make_opt, problem):
    """The optimizer for ``problem``: the Metamizer with a network of the problem's dimension (the 3-D
    network for fluid3d and laplace3d, issue #28; a network refuses fields of another dimension)."""
    if make_opt is _metamizer:
        return _metamizer(len(problem.shape) - 2)
    return make_opt()


def test_a_network_refuses_fields_of_another_dimension():
    with pytest.raises(ValueError, match="3-D network"):
        _metamizer(2).init_state((1, 4, 20, 20, 20))
    with pytest.raises(ValueError, match="network is 3-D"):
        _metamizer(3).init_state((1, 1, 20, 20))


@pytest.mark.parametrize("name", sorted(BY_NAME))
@pytest.mark.parametrize("make_opt", [_metamizer, lambda: TorchOptimizer("adam", 1e-3),
                                      lambda: TorchOptimizer("sgd", 1e-4)], ids=["metamizer", "adam", "sgd"])
def test_solve_runs_every_op_with_every_optimizer(name, make_opt):
    problem = make_problem(name)
    res = solve(problem, _optimizer(make_opt, problem), iterations=5, guard=True, accelerate=0)
    assert res.iterations == 5 and torch.isfinite(res.u).all()
    assert res.history().shape == (6, 1)
    # the guard rejects steps that more than double the loss (guard_growth = 1)
    assert float(res.residual) <= 2 * float(res.residuals[0])


@pytest.mark.parametrize("name", sorted(BY_NAME))
@pytest.mark.parametrize("make_opt", [_metamizer, lambda: TorchOptimizer("sgd", 1e-4)], ids=["metamizer", "sgd"])
def test_acceleration_runs_on_every_op_and_only_lowers_the_loss(name, make_opt):
    """One accelerated iteration keeps the lower-loss of the optimizer's point and the candidate
    (a line search along the step, the only direction in the history yet), so it can never end
    above the plain iteration; and the run stays finite on every op."""
    problem = make_problem(name)
    plain = solve(problem, _optimizer(make_opt, problem), iterations=1, guard=True, accelerate=0)
    fast = solve(problem, _optimizer(make_opt, problem), iterations=1, guard=True, accelerate=5)
    assert torch.isfinite(fast.u).all()
    lp = float(problem.loss(plain.u))
    assert float(problem.loss(fast.u)) <= lp + 1e-9 * abs(lp)


@pytest.mark.parametrize("name", ["diffusion", "wave", "fluid", "cloth"])
def test_time_stepper_with_rescale(name):
    problem = make_problem(name)
    opt = _metamizer()
    stepper = TimeStepper(problem, opt, iterations_per_step=3, rescale_on_step=2.0)
    before = stepper.state.scale.clone()
    stepper.step()
    stepper.step()
    assert len(stepper.reports) == 2 and torch.isfinite(stepper.u).all()
    assert all(r.iterations == 3 for r in stepper.reports)
    assert not torch.equal(before, stepper.state.scale)
