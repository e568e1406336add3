"""The TorchScript solver module (metaphys/optim/scripted_solver.py, weights/metamizer_solver.pt):
the same iterates as ``solve(problem, Metamizer())`` to 1e-12, iterate by iterate, on the eval cases
(network step, subspace acceleration, step guard, tolerance stop); loadable without metaphys."""
import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from metaphys.eval import cases
from metaphys.optim.metamizer import Metamizer
from metaphys.optim.scripted_solver import build_solver, export_solver, load_solver
from metaphys.optim.solve import DivergenceError, iterate, solve
from metaphys.optim.weights_file import WeightsError, default_weights_path, sha256_of
from metaphys.physics import LaplaceProblem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "weights", "metamizer_solver.pt")
RTOL = 1e-12
ScriptError = torch.jit.Error   # what a scripted method's raise becomes in Python (the message is kept)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")  # deprecated upstream


@pytest.fixture(scope="module")
def solver():
    torch.set_num_threads(1)
    return build_solver()


def python_iterates(problem, initial_scale=0.05, **options):
    """The Python API's iterates (after each iteration), residual history and result."""
    iterates = []
    result = solve(problem, Metamizer(initial_scale=initial_scale), u0=problem.initial_guess(),
                   callback=lambda it, u, r: iterates.append(u.clone()), **options)
    return iterates, result.history(), result


def scripted_iterates(solver, problem, iterations=None, **options):
    """The same through the module's ask/tell loop, the problem's own kernel as the caller's physics."""
    fields = problem.fields
    u0 = problem.initial_guess()
    mask, values = fields["mask"], fields["bc"]
    if iterations is not None:
        options["max_iterations"] = iterations
    state = solver.start(u0, mask, values, subspace_model=getattr(problem, "subspace_model", "energy"), **options)
    iterates = []
    while not solver.done(state):
        loss, grad = problem.loss_and_grad(solver.query(state))
        before = solver.iterations(state)
        state = solver.tell(state, loss, grad, problem.residual_from(loss, grad))
        if solver.iterations(state) > before:
            iterates.append(solver.solution(state).clone())
    return iterates, solver.residuals(state), state


def assert_same_iterates(py, ts):
    assert len(py) == len(ts), f"{len(py)} Python iterations, {len(ts)} scripted"
    for k, (a, b) in enumerate(zip(py, ts)):
        err = float((a - b).abs().max() / a.abs().max().clamp_min(1e-300))
        assert err <= RTOL, f"iterate {k + 1} differs by {err:.2e} (relative to max|u|)"


CASES = {  # name: (problem builder, options of solve)
    "laplace obstacles 64 accelerated": (lambda: cases.laplace_random(64), dict(iterations=40)),
    "laplace obstacles 64 plain": (lambda: cases.laplace_random(64), dict(iterations=30, accelerate=0)),
    "laplace obstacles 64 tol + guard": (lambda: cases.laplace_random(64),
                                         dict(tol=1e-20, max_iterations=200, guard=True)),
    "laplace obstacles 48 guard rejections": (lambda: cases.laplace_random(48),
                                              dict(iterations=20, guard=True, initial_scale=1e3)),
    "laplace obstacles 48 tol cap": (lambda: cases.laplace_random(48), dict(tol=1e-30, max_iterations=12)),
    "poisson charges 64 tol": (lambda: cases.poisson_charges(64), dict(tol=1e-25, max_iterations=150)),
    "laplace bilinear 64": (lambda: cases.laplace_bilinear(64), dict(iterations=30)),
    "diffusion D=0.1 (gradient subspace model)": (lambda: cases.diffusion_rotating(48, 0.1), dict(iterations=15)),
    "burgers (2 channels) guard": (lambda: cases.burgers_random(32, 0.3), dict(iterations=10, guard=True)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_iterates_as_the_python_api(solver, name):
    build, options = CASES[name]
    problem = build()
    py, py_hist, result = python_iterates(problem, **options)
    ts, ts_hist, state = scripted_iterates(solver, problem, **options)
    assert_same_iterates(py, ts)
    torch.testing.assert_close(ts_hist, py_hist, rtol=RTOL, atol=0)
    assert solver.guard_rejections(state) == result.guard_rejections
    assert solver.hit_cap(state) == result.hit_cap
    if "rejections" in name:
        assert result.guard_rejections > 0
    if "cap" in name:
        assert result.hit_cap


@pytest.mark.parametrize("stencil", [9, 5])
def test_built_in_poisson_matches_the_python_api(solver, stencil):
    ref = cases.poisson_charges(64)
    fl = ref.fields
    problem = LaplaceProblem(fl["mask"], fl["bc"], fl["f"], stencil=stencil)
    result = solve(problem, Metamizer(), tol=1e-22, max_iterations=200)
    u, history = solver.solve_poisson(fl["mask"], fl["bc"], fl["f"], stencil, 1e-22, 200)
    torch.testing.assert_close(history, result.history(), rtol=RTOL, atol=0)
    assert float((u - result.u).abs().max()) <= RTOL * float(result.u.abs().max())
    assert float(history[-1, 0]) <= 1e-22
    loss, grad = solver.poisson_loss_and_grad(u, fl["mask"], fl["bc"], fl["f"], stencil)
    loss_k, grad_k = problem.loss_and_grad(u)
    torch.testing.assert_close(loss, loss_k, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, grad_k, rtol=1e-12, atol=1e-300)


def test_time_steps_carry_the_network_state_as_time_stepper_does(solver):
    """Advection-diffusion, 3 time steps of 8 guarded iterations: start(..., previous=state)."""
    from metaphys.optim.solve import TimeStepper
    problem = cases.diffusion_rotating(48, 0.1)
    stepper = TimeStepper(problem, Metamizer(), iterations_per_step=8, guard=True)
    twin = cases.diffusion_rotating(48, 0.1)
    u, state = twin.initial_guess(), None
    for step in range(3):
        stepper.step()
        state = solver.start(u, twin.fields["mask"], twin.fields["bc"], max_iterations=8, guard=True,
                             subspace_model=twin.subspace_model, previous=state)
        while not solver.done(state):
            state = solver.tell(state, *twin.loss_and_grad(solver.query(state)))
        solution = solver.solution(state)
        err = float((solution - stepper.solution).abs().max() / stepper.solution.abs().max())
        assert err <= RTOL, f"time step {step + 1} differs by {err:.2e}"
        u = twin.advance(solution)
    with pytest.raises(ScriptError, match="state of another problem"):
        solver.start(torch.zeros(1, 1, 32, 32, dtype=torch.float64), previous=state)


class _Trap:
    """A problem whose loss explodes away from u0: the guard shrinks the steps, no guard is a divergence."""

    def __init__(self, u0):
        self.u0 = u0

    def loss_and_grad(self, u):
        loss = 1.0 + 1e14 * (u - self.u0).flatten(1).pow(2).mean(1)
        return loss, torch.ones_like(u)

    def apply(self, u, step):
        return u + step


def test_guard_stays_put_and_divergence_raises_as_in_python(solver):
    u0 = torch.zeros(2, 1, 16, 16, dtype=torch.float64)
    trap = _Trap(u0)
    ref = iterate(trap, Metamizer(), u0, Metamizer().init_state(tuple(u0.shape)), iterations=3, guard=True,
                  accelerate=20)
    state = solver.start(u0, max_iterations=3, guard=True)
    while not solver.done(state):
        state = solver.tell(state, *trap.loss_and_grad(solver.query(state)))
    assert torch.equal(solver.solution(state), ref.u)
    assert solver.guard_rejections(state) == ref.guard_rejections
    state = solver.start(u0, max_iterations=1, guard=True)   # every try of iteration 1 rejected: stays put
    while not solver.done(state):
        state = solver.tell(state, *trap.loss_and_grad(solver.query(state)))
    assert torch.equal(solver.solution(state), u0) and solver.guard_rejections(state) == 4 * 2
    with pytest.raises(DivergenceError):
        iterate(trap, Metamizer(), u0, Metamizer().init_state(tuple(u0.shape)), iterations=3)
    state = solver.start(u0, max_iterations=3)
    with pytest.raises(ScriptError, match="diverged at iteration 1"):
        while not solver.done(state):
            state = solver.tell(state, *trap.loss_and_grad(solver.query(state)))


def test_forward_is_the_weights_contract(solver):
    g = torch.randn(2, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    args = (g, 0.5 * g, 1e-3 * g, torch.full((2,), 0.05, dtype=torch.float64))
    for a, b in zip(solver(*args), Metamizer().model(*args)):
        assert torch.equal(a, b)


def test_refuses_misuse_by_name(solver):
    u0 = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    with pytest.raises(ScriptError, match="at least 16x16"):
        solver.start(torch.zeros(1, 1, 8, 32, dtype=torch.float64))
    with pytest.raises(ScriptError, match="tol must be > 0"):
        solver.start(u0, tol=0.0)
    with pytest.raises(ScriptError, match="values without a mask"):
        solver.start(u0, None, u0)
    with pytest.raises(ScriptError, match="float64"):
        solver.start(u0.float())
    state = solver.start(u0, max_iterations=0)
    with pytest.raises(ScriptError, match="grad shaped like u"):
        solver.tell(state, torch.ones(1, dtype=torch.float64), torch.ones(1, 1, 16, 16, dtype=torch.float64))
    state = solver.tell(state, torch.ones(1, dtype=torch.float64), torch.ones_like(u0))
    assert solver.done(state) and solver.iterations(state) == 0
    with pytest.raises(ScriptError, match="finished"):
        solver.tell(state, torch.ones(1, dtype=torch.float64), torch.ones_like(u0))


def test_the_shipped_module_wraps_the_shipped_weights_and_loads_without_metaphys(tmp_path):
    with open(os.path.splitext(SHIPPED)[0] + ".json") as fh:
        meta = json.load(fh)
    assert meta["sha256"] == sha256_of(SHIPPED)
    assert meta["wraps"]["sha256"] == sha256_of(default_weights_path()), (
        "weights/metamizer_solver.pt wraps other weights than weights/metamizer.pt: re-export it with "
        "`metaphys export-solver`")
    fl = cases.poisson_charges(48).fields
    torch.save({k: fl[k] for k in ("mask", "bc", "f")}, tmp_path / "problem.pt")
    script = (
        "import sys; sys.modules['metaphys'] = None\n"   # any import of metaphys now fails
        "import torch; torch.set_num_threads(1)\n"
        f"s = torch.jit.load({SHIPPED!r}); p = torch.load({str(tmp_path / 'problem.pt')!r})\n"
        "u, h = s.solve_poisson(p['mask'], p['bc'], p['f'], 9, 1e-20, 200)\n"
        f"torch.save({{'u': u, 'h': h}}, {str(tmp_path / 'out.pt')!r})\n")
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    out = torch.load(tmp_path / "out.pt")
    result = solve(LaplaceProblem(fl["mask"], fl["bc"], fl["f"]), Metamizer(), tol=1e-20, max_iterations=200)
    torch.testing.assert_close(out["h"], result.history(), rtol=RTOL, atol=0)
    assert float((out["u"] - result.u).abs().max()) <= RTOL * float(result.u.abs().max())


def test_the_shipped_module_is_the_current_code(solver):
    buffer = io.BytesIO()   # compared after the same save/load round trip: it renames locals
    torch.jit.save(solver, buffer)
    buffer.seek(0)
    fresh, shipped = torch.jit.load(buffer), load_solver(SHIPPED)
    names = sorted(fresh._c._method_names())
    assert sorted(shipped._c._method_names()) == names
    stale = [n for n in names if fresh._c._get_method(n).code != shipped._c._get_method(n).code]
    assert not stale, (f"weights/metamizer_solver.pt predates metaphys/optim/scripted_solver.py (methods {stale}): "
                       "re-export it with `metaphys export-solver`")


def test_export_command_and_checksum(tmp_path):
    from metaphys.cli import main
    out = str(tmp_path / "solver.pt")
    assert main(["export-solver", "--out", out]) == 0
    with open(str(tmp_path / "solver.json")) as fh:
        meta = json.load(fh)
    assert meta["wraps"] == {"file": "metamizer.pt", "sha256": sha256_of(default_weights_path())}
    assert load_solver(out).iterations(load_solver(out).start(torch.zeros(1, 1, 16, 16, dtype=torch.float64))) == 0
    with open(out, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_solver(out)
    with pytest.raises(WeightsError, match="not found"):
        export_solver(str(tmp_path / "other.pt"), str(tmp_path / "missing.pt"))


def test_the_readme_snippet_runs(monkeypatch):
    """The README's "The solver for C++ and game engines" snippet, with a problem of the eval's."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## The solver for C++ and game engines", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    problem = cases.laplace_random(48)
    ns = {"u0": problem.initial_guess(), "mask": problem.fields["mask"], "values": problem.fields["bc"],
          "my_loss_and_grad": problem.loss_and_grad}
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md solver snippet", "exec"), ns)
    result = solve(problem, Metamizer(), tol=1e-20, max_iterations=300)
    torch.testing.assert_close(ns["history"], result.history(), rtol=RTOL, atol=0)
