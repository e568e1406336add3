"""One solver layer (issue #24 item 6): every sim steps through ``step_solver.solve(problem, start, state)``
(optim/step_solvers.py); the solver built from a sim's keyword arguments and the same solver given as
an object give bit-identical frames and records; "auto" is the Metamizer with Newton finishing what it
misses; what is not a step solver is refused by name."""
import numpy as np
import pytest
import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.baselines import TorchOptimizer
from metaphys.optim.metamizer import Metamizer, MetamizerNet
from metaphys.optim.newton import NewtonSolver
from metaphys.optim.solve import iterate
from metaphys.optim.step_solvers import (KrylovStep, MetamizerStep, MetamizerThenNewton, NewtonStep, StepResult,
                                         StepSolver)
from metaphys.sims import BurgersSim, ClothSim, DiffusionSim, SmokeSim, WaveSim
from metaphys.sims.cloth import STEP_TOL, flat_cloth
from metaphys.spec.validate import ArgumentError


def tiny_metamizer():
    torch.manual_seed(0)
    return Metamizer(MetamizerNet(hidden=4).eval())


def sgd():
    return TorchOptimizer("sgd", lr=1e-9)   # cannot reach any tolerance: the Metamizer stage always misses


def bump(n=16):
    yy, xx = np.mgrid[0:n, 0:n]
    return np.exp(-((yy - n / 2) ** 2 + (xx - n / 2) ** 2) / 8.0)


def drape(**kw):
    corners = np.zeros(256)
    corners[0] = corners[15] = 1.0
    return ClothSim(16, 16, rest_positions=flat_cloth(16, 16, 1.0, height=0.9), pin_weights=corners,
                    colliders=[{"type": "sphere", "center": [0.0, 0.1, 0.55], "radius": 0.25}], threads=1, **kw)


class Spy:
    """A step solver of the caller's: counts the solves the sim asks for, then lets ``inner`` solve."""

    name = "spy"

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, key):   # optimizer, init_state, tol, state_dict ... of the solver inside
        return getattr(self.inner, key)

    def solve(self, problem, start, state=None, **options):
        self.calls.append((problem, tuple(start.shape), sorted(options)))
        return self.inner.solve(problem, start, state, **options)


# ---- every sim steps through the interface -------------------------------------------------------------
SPIED = {
    "cloth": (lambda s: drape(step_solver=s), lambda: NewtonStep(tol=1e-5, max_iterations=100, linear="pcg"), 2),
    "cloth_substeps": (lambda s: drape(substeps=3, step_solver=s),
                       lambda: MetamizerStep(tiny_metamizer(), iterations=2, guard_growth=0.0), 2 * 3),
    "diffusion": (lambda s: DiffusionSim((16, 16), D=0.1, source=bump(), step_solver=s),
                  lambda: MetamizerStep(tiny_metamizer(), iterations=2), 2),
    "wave": (lambda s: WaveSim((16, 16), x0=bump(), step_solver=s),
             lambda: MetamizerStep(tiny_metamizer(), iterations=2), 2),
    "burgers": (lambda s: BurgersSim(np.stack([bump(), -bump()]), step_solver=s),
                lambda: MetamizerStep(tiny_metamizer(), iterations=2), 2),
}


@pytest.mark.parametrize("name", sorted(SPIED))
def test_every_sim_solves_each_step_through_its_step_solver(name):
    make, solver, expected_calls = SPIED[name]
    spy = Spy(solver())
    sim = make(spy)
    assert sim.step_solver is spy
    sim.run(2)
    assert len(spy.calls) == expected_calls
    assert all(problem is sim.problem for problem, _, _ in spy.calls)
    if name.startswith("cloth"):   # cloth's gauge, Newton's warm start and progress reach the solver
        assert all(options == ["progress", "scale", "warm_start"] for _, _, options in spy.calls)
        assert sim.solver == "spy"


def test_smoke_solves_each_fluid_step_through_its_step_solver():
    spy = Spy(MetamizerStep(tiny_metamizer(), iterations=2))
    sim = SmokeSim((16, 16), step_solver=spy)
    sim.run(2)
    assert sim.step_solver is spy and sim.optimizer is spy.inner.optimizer
    assert len(spy.calls) == sum(r.substeps for r in sim.records) >= 2
    assert all(problem is sim.fluid for problem, _, _ in spy.calls)


def test_a_sims_built_solver_is_the_one_it_steps_with():
    """Swapping ``step_solver`` after construction changes what every later step runs."""
    sim = DiffusionSim((16, 16), D=0.1, source=bump(), iterations_per_step=2, optimizer=tiny_metamizer())
    assert isinstance(sim.step_solver, MetamizerStep) and sim.step_solver.iterations == 2
    sim.step_solver = spy = Spy(sim.step_solver)
    sim.step()
    assert len(spy.calls) == 1 and sim.records[-1].iterations == 2


@pytest.mark.parametrize("solver, kind, newton", [("newton", NewtonStep, True), ("auto", MetamizerThenNewton, True),
                                                  ("metamizer", MetamizerStep, False)])
def test_cloth_builds_the_step_solver_its_settings_name(solver, kind, newton):
    sim = ClothSim(16, 16, solver=solver, optimizer=tiny_metamizer(), colliders=[])
    assert type(sim.step_solver) is kind and isinstance(sim.step_solver, StepSolver)
    assert (sim.newton is not None) == newton and sim.solver == sim.step_solver.name == solver
    assert (sim.optimizer is None) == (solver == "newton")


# ---- the keyword arguments and the equivalent solver object: the same frames, bit for bit ---------------
def _same_run(a, b, steps):
    fa, fb = a.run(steps), b.run(steps)
    assert np.array_equal(fa, fb)
    assert [r.as_dict() for r in a.records] == [r.as_dict() for r in b.records]
    return a.records


def test_cloth_newton_settings_equal_a_newton_step():
    recs = _same_run(drape(), drape(step_solver=NewtonStep(tol=1e-5, max_iterations=100, linear="pcg",
                                                           time_budget=30.0, step_tol=STEP_TOL)), 2)
    assert all(r.finished_by == "newton" and r.newton_iterations > 0 for r in recs)


def test_cloth_auto_settings_equal_the_composite_solver():
    def composite():
        return MetamizerThenNewton(MetamizerStep(sgd(), iterations=4, tol=1e-8, guard_growth=0.0),
                                   NewtonStep(tol=1e-8, max_iterations=100, linear="pcg", time_budget=30.0,
                                              step_tol=STEP_TOL))
    plain = ClothSim(16, 16, colliders=[], optimizer=sgd(), iterations_per_step=4, solver="auto", tol=1e-8, threads=1)
    built = ClothSim(16, 16, colliders=[], threads=1, step_solver=composite())
    recs = _same_run(plain, built, 5)
    assert [r.iterations for r in recs] == [4, 4, 4, 0, 0]   # three misses, then the Metamizer is skipped


def test_cloth_metamizer_settings_equal_a_metamizer_step():
    _same_run(drape(solver="metamizer", tol=None, iterations_per_step=3, optimizer=tiny_metamizer()),
              drape(step_solver=MetamizerStep(tiny_metamizer(), iterations=3, guard_growth=0.0)), 2)


def test_smoke_settings_equal_a_metamizer_step():
    a = SmokeSim((16, 16), iterations_per_step=None, tol=1e-7, max_iterations=6, optimizer=tiny_metamizer())
    b = SmokeSim((16, 16), step_solver=MetamizerStep(tiny_metamizer(), tol=1e-7, max_iterations=6))
    _same_run(a, b, 2)
    assert np.array_equal(a.velocity, b.velocity)


@pytest.mark.parametrize("make", [
    lambda **kw: DiffusionSim((16, 16), D=0.1, source=bump(), **kw),
    lambda **kw: WaveSim((16, 16), x0=bump(), **kw),
    lambda **kw: BurgersSim(np.stack([bump(), -bump()]), **kw),
], ids=["diffusion", "wave", "burgers"])
def test_pde_settings_equal_a_metamizer_step(make):
    recs = _same_run(make(iterations_per_step=3, optimizer=tiny_metamizer()),
                     make(step_solver=MetamizerStep(tiny_metamizer(), iterations=3)), 2)
    assert all(r.iterations == 3 for r in recs)


def test_metamizer_step_is_the_optimizer_loop():
    sim = DiffusionSim((16, 16), D=0.1, source=bump(), iterations_per_step=4, optimizer=tiny_metamizer())
    p, opt = sim.problem, sim.optimizer
    u0 = p.initial_guess()
    loop = iterate(p, opt, u0, opt.init_state(tuple(u0.shape)), iterations=4, guard=True, accelerate=DEFAULT_MEMORY)
    res = MetamizerStep(opt, iterations=4).solve(p, u0, None)
    assert isinstance(res, StepResult) and res.finished_by == "metamizer" and res.iterations == 4
    assert torch.equal(res.u, loop.u) and torch.equal(res.residual_end, loop.residuals[-1])
    assert res.converged is None and res.state is not None


# ---- the composite: Newton finishes what the Metamizer misses ------------------------------------------
def _cloth_problem():
    sim = ClothSim(16, 16, colliders=[], threads=1)
    return sim.problem, sim.u


def test_the_composite_falls_back_to_newton_when_the_metamizer_misses():
    p, u = _cloth_problem()
    solver = MetamizerThenNewton(MetamizerStep(sgd(), iterations=3, tol=1e-8), NewtonStep(tol=1e-8))
    res = solver.solve(p, u, solver.init_state(u))
    assert res.finished_by == "newton" and res.iterations == 3 and res.newton_iterations > 0
    assert res.converged and res.relative_end <= 1e-8 and solver.misses == 1
    alone = NewtonStep(tol=1e-8).solve(p, u)
    assert torch.equal(res.u, alone.u)   # Newton starts where it would alone: the same answer


def test_the_composite_keeps_a_metamizer_answer_within_the_tolerance():
    p, u = _cloth_problem()
    solver = MetamizerThenNewton(MetamizerStep(tiny_metamizer(), iterations=3, tol=1e3), NewtonStep(tol=1e3))
    res = solver.solve(p, u)
    assert res.finished_by == "metamizer" and res.newton_iterations == 0 and res.newton is None
    assert res.converged and solver.misses == 0


def test_the_composite_skip_policy_resumes_with_the_sim():
    def make():
        return ClothSim(16, 16, colliders=[], threads=1, step_solver=MetamizerThenNewton(
            MetamizerStep(sgd(), iterations=2, tol=1e-8), NewtonStep(tol=1e-8, linear="pcg"), skip_after=2,
            retry_every=3))
    a = make()
    a.run(3)
    saved = a.state_dict()
    assert saved["metamizer_misses"] == 2 and saved["substep_count"] == 3 and saved["newton"]
    a.run(3)
    b = make()
    b.load_state_dict(saved)
    b.run(3)
    assert [r.iterations for r in a.records] == [2, 2, 0, 2, 0, 0]   # 2 misses; then every 3rd step only
    assert [r.as_dict() for r in b.records] == [r.as_dict() for r in a.records]
    assert np.array_equal(a.positions, b.positions)


def test_newton_step_does_nothing_where_the_start_meets_the_tolerance():
    p, u = _cloth_problem()
    res = NewtonStep(tol=1e6).solve(p, u, "carried")
    assert res.finished_by == "" and res.u is u and res.converged and res.state == "carried"


def test_a_krylov_step_solves_a_linear_sim():
    def make(**kw):
        return DiffusionSim((16, 16), D=0.5, source=bump(), **kw)
    krylov = make(step_solver=KrylovStep(rtol=1e-12, preconditioner="jacobi"))
    metamizer = make(iterations_per_step=2, optimizer=tiny_metamizer())
    assert krylov.optimizer is None and krylov.state is None
    krylov.run(2)
    metamizer.run(2)
    rec = krylov.records[-1]
    assert rec.iterations > 0 and not rec.hit_cap
    assert rec.residual < 1e-20 < metamizer.records[-1].residual


# ---- what is not a step solver --------------------------------------------------------------------------
@pytest.mark.parametrize("value, got", [
    (NewtonSolver(), r"got a NewtonSolver, whose solve returns a NewtonResult \(wrap it: NewtonStep\(solver\)\)"),
    (TorchOptimizer("adam", 1e-3), r"got an optimizer \(TorchOptimizer\).*MetamizerStep\(optimizer, ...\)"),
    (MetamizerStep, r"got the class MetamizerStep, not an object of it"),
    ("newton", r"got a str \(it has no solve method\)"),
])
def test_a_non_solver_is_refused_naming_what_it_is(value, got):
    for owner, make in (("ClothSim", lambda: ClothSim(16, 16, step_solver=value)),
                        ("SmokeSim", lambda: SmokeSim((16, 16), step_solver=value)),
                        ("DiffusionSim", lambda: DiffusionSim((16, 16), step_solver=value))):
        with pytest.raises(ArgumentError, match=rf"{owner}\(step_solver=...\): expected a step solver: an object "
                                                rf"with solve\(problem, start, state\) -> StepResult .*{got}"):
            make()


def test_a_step_solver_with_the_settings_it_replaces_is_refused():
    with pytest.raises(ArgumentError, match=r"ClothSim\(step_solver=...\): expected either a step solver or the "
                                            r"solver settings it replaces, got step_solver= and solver=, tol="):
        ClothSim(16, 16, step_solver=NewtonStep(tol=1e-6), tol=1e-6, solver="auto")
    with pytest.raises(ArgumentError, match=r"WaveSim\(step_solver=...\): .* got step_solver= and optimizer="):
        WaveSim((16, 16), step_solver=MetamizerStep(tiny_metamizer(), iterations=2), optimizer=tiny_metamizer())
    # the defaults, written out, are no clash
    ClothSim(16, 16, step_solver=NewtonStep(tol=1e-6), solver="newton", tol=1e-5)


def test_solver_objects_refuse_bad_settings():
    with pytest.raises(ValueError, match="iterations=K or tol="):
        MetamizerStep(tiny_metamizer())
    with pytest.raises(TypeError, match="init_state, step and shrink"):
        MetamizerStep(NewtonSolver(), iterations=2)
    with pytest.raises(ValueError, match="needs a tolerance"):
        MetamizerThenNewton(MetamizerStep(tiny_metamizer(), iterations=2), NewtonStep())
    with pytest.raises(ValueError, match="not both"):
        NewtonStep(NewtonSolver(), tol=1e-3)
