"""The Python API refuses what the bake spec refuses (issue #25, section 3), with the spec's own value
types (spec/validate.py): every probe is an ArgumentError (a ValueError and a TypeError) naming the
argument as the user passed it, never a raw torch/numpy error, never a coerced value; absurd forces
end in SimulationDiverged naming the cause instead of garbage frames. Section 5: grid frames export,
threads= on every sim, what a guard-rejection count means."""
import re

import numpy as np
import pytest

from metaphys.io.pc2 import read_pc2, write_pc2
from metaphys.sims import (ArgumentError, BurgersSim, ClothSim, DiffusionSim, SimulationDiverged, SmokeSim, WaveSim,
                           solve_poisson)
from metaphys.sims import cloth as cloth_module
from metaphys.sims import smoke as smoke_module
from metaphys.sims.common import SolverSettings, guard_note
from metaphys.spec import schema
from metaphys.spec.params import CLOTH_SIM_KEYS, SMOKE_SIM_KEYS
from metaphys.spec.validate import OrNone

NV = 16 * 16
SPHERE = {"type": "sphere", "center": [0.0, 0.0, 0.0], "radius": 0.2}


def refused(make, call: str, expected: str = ""):
    """``make()`` raises an ArgumentError whose message starts with ``call`` (e.g. "ClothSim(fps=...)")
    and contains ``expected``."""
    with pytest.raises(ArgumentError) as info:
        make()
    message = str(info.value)
    assert message.startswith(call) or f"\n  {call}" in message, message
    assert expected in message, message
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    return message


# ---- ClothSim: raw errors before, a message now ------------------------------------------------------
@pytest.mark.parametrize("kwargs, call, expected", [
    (dict(gravity="down"), "ClothSim(gravity=...)", 'expected a list of 3 numbers (m/s^2), got "down"'),
    (dict(size_m="1"), "ClothSim(size_m=...)", 'expected a number > 0 (metres), got "1"'),
    (dict(colliders=[dict(SPHERE, radius="big")]), "ClothSim(colliders=...)",
     'colliders[0].radius: expected a number > 0 (metres), got "big"'),
    (dict(colliders="sphere"), "ClothSim(colliders=...)", 'expected a list of colliders or None, got "sphere"'),
    (dict(colliders=[{"type": "sphere", "radius": 0.2}]), "ClothSim(colliders=...)", "colliders[0].center: missing"),
    (dict(colliders=[dict(SPHERE, radus=0.3)]), "ClothSim(colliders=...)", 'did you mean "radius"?'),
    (dict(pin_targets=np.zeros((0, NV, 3))), "ClothSim(pin_targets=...)", "got shape [0, 256, 3]"),
    (dict(device="gpu"), "ClothSim(device=...)", 'expected "cpu", "cuda", "cuda:N" or a torch.device, got "gpu"'),
    (dict(optimizer="metamizer"), "ClothSim(optimizer=...)", 'pass weights="path.pt", got "metamizer"'),
    (dict(weights=3), "ClothSim(weights=...)", "got 3"),
    (dict(weights="no/such/weights.pt"), "ClothSim(weights=...)", "file not found: no/such/weights.pt"),
    (dict(rest_positions=np.zeros((3, 3))), "ClothSim(rest_positions=...)", "expected shape [256, 3]"),
])
def test_cloth_refuses_what_raised_raw_errors(kwargs, call, expected):
    refused(lambda: ClothSim(16, 16, **kwargs), call, expected)


# ---- ClothSim: silently coerced before, refused now --------------------------------------------------
@pytest.mark.parametrize("name, value, expected", [
    ("fps", "24", '(frames per second), got "24"'),
    ("fps", True, "(frames per second), got True"),
    ("tension", True, "got True"),
    ("tension", "250", 'got "250"'),
    ("tol", True, "expected a number > 0 (relative residual) or None, got True"),
    ("tol", "1e-8", 'got "1e-8"'),
    ("iterations_per_step", True, "expected an integer >= 1 or None, got True"),
    ("iterations_per_step", "30", 'got "30"'),
    ("iterations_per_step", 2.5, "expected an integer >= 1 or None, got 2.5"),
    ("substeps", 1.5, "got 1.5"),
    ("guard", "no", 'expected True or False, got "no"'),
    ("size_m", -1, "expected a number > 0 (metres), got -1"),
    ("contact_margin", 0, "expected a number in (0, 1] (fraction of an edge), got 0"),
    ("contact_margin", 1e9, "expected a number in (0, 1] (fraction of an edge), got 1000000000.0"),
    ("threads", 1.0, "expected an integer >= 1 or None, got 1.0"),
    ("line_search", 1, "expected True or False, got 1"),
])
def test_cloth_coerces_nothing(name, value, expected):
    refused(lambda: ClothSim(16, 16, **{name: value}), f"ClothSim({name}=...)", expected)


def test_collider_radius_true_is_not_a_number():
    refused(lambda: ClothSim(16, 16, colliders=[dict(SPHERE, radius=True)]), "ClothSim(colliders=...)",
            "colliders[0].radius: expected a number > 0 (metres), got True")


def test_every_problem_is_listed_at_once():
    message = refused(lambda: ClothSim(16, 16, fps=0, tension=-1, guard="yes"), "ClothSim(fps=...)")
    assert message.startswith("invalid arguments of ClothSim (3 problems):")
    assert "ClothSim(tension=...)" in message and "ClothSim(guard=...)" in message


def test_python_values_are_read_as_the_json_they_stand_for():
    import torch
    sim = ClothSim(np.int64(16), 16, gravity=np.array([0.0, 0.0, -9.81]), wind=torch.zeros(3), fps=np.float32(24),
                   colliders=(dict(SPHERE, center=np.array([0.0, 0.0, 0.4])),), pin_weights=torch.zeros(NV),
                   solver="newton", tol=1e-8)
    assert sim.rows == 16 and sim.fps == 24.0 and sim.colliders[0]["center"].shape == (1, 3)


# ---- SmokeSim ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, call, expected", [
    (dict(obstacle_shapes=[{"type": "circle", "radius": 3}]), "SmokeSim(obstacle_shapes=...)",
     "obstacle_shapes[0].center: missing (expected a list of 2 numbers [row, col] (cells)"),
    (dict(emitters=np.zeros((0, 32, 32))), "SmokeSim(emitters=...)", "got shape [0, 32, 32]"),
    (dict(emitters="no/such/emitters.npy"), "SmokeSim(emitters=...)", "file not found: no/such/emitters.npy"),
    (dict(obstacles="obstacles.txt"), "SmokeSim(obstacles=...)", "a path must name a .npy file"),
    (dict(emitters=np.full((32, 32), 2.0)), "SmokeSim(emitters=...)", "expected values in [0, 1]"),
    (dict(buoyancy="0.02"), "SmokeSim(buoyancy=...)", 'got "0.02"'),
    (dict(buoyancy=True), "SmokeSim(buoyancy=...)", "got True"),
    (dict(resolution=(32.0, 32)), "SmokeSim(resolution=...)", "expected a list of 2 integers >= 16"),
    (dict(iterations_per_step=2.5), "SmokeSim(iterations_per_step=...)", "got 2.5"),
    (dict(batch=True), "SmokeSim(batch=...)", "expected an integer >= 1, got True"),
    (dict(wall=20), "SmokeSim(wall=...)", "leave room for fluid"),
    (dict(device="gpu"), "SmokeSim(device=...)", 'got "gpu"'),
    (dict(optimizer="metamizer"), "SmokeSim(optimizer=...)", 'got "metamizer"'),
    (dict(guard="no"), "SmokeSim(guard=...)", 'got "no"'),
])
def test_smoke_refuses_with_the_argument_named(kwargs, call, expected):
    kwargs.setdefault("resolution", (32, 32))
    refused(lambda: SmokeSim(**kwargs), call, expected)


# ---- the PDE sims --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, call, expected", [
    (lambda: DiffusionSim((32, 32), D="0.1"), "DiffusionSim(D=...)", 'got "0.1"'),
    (lambda: DiffusionSim((32, 32), D=-1), "DiffusionSim(D=...)", "expected a number >= 0"),
    (lambda: DiffusionSim((32, 32), source=np.zeros((5, 5))), "DiffusionSim(source=...)", "got shape [5, 5]"),
    (lambda: DiffusionSim((32, 32), source="x"), "DiffusionSim(source=...)", 'got "x"'),
    (lambda: DiffusionSim((32, 32), velocity=np.zeros((32, 32))), "DiffusionSim(velocity=...)",
     "expected shape [2, 32, 32]"),
    (lambda: DiffusionSim((32, 32), mask=np.full((32, 32), 0.5)), "DiffusionSim(mask=...)", "only 0 (free) and 1"),
    (lambda: DiffusionSim((32, 32), dt=[1.0, 2.0]), "DiffusionSim(dt=...)", "one per sample, batch 1"),
    (lambda: DiffusionSim((32, 32), guard="no"), "DiffusionSim(guard=...)", 'got "no"'),
    (lambda: WaveSim((8, 8)), "WaveSim(shape=...)", "expected a list of 2 integers >= 16"),
    (lambda: WaveSim((32, 32), c=True), "WaveSim(c=...)", "got True"),
    (lambda: WaveSim((32, 32), boundary=3), "WaveSim(boundary=...)", "expected a function"),
    (lambda: BurgersSim(np.zeros((3, 32, 32))), "BurgersSim(v0=...)", "got shape [3, 32, 32]"),
    (lambda: BurgersSim(np.zeros((2, 8, 8))), "BurgersSim(v0=...)", "at least 16 x 16"),
    (lambda: solve_poisson("f"), "solve_poisson(f=...)", 'got "f"'),
    (lambda: solve_poisson(np.zeros((32, 32)), tol=None), "solve_poisson(tol=...)", "when iterations is None"),
    (lambda: solve_poisson(np.zeros((32, 32)), bc=np.zeros((3, 3))), "solve_poisson(bc=...)", "got shape [3, 3]"),
])
def test_pde_sims_refuse_with_the_argument_named(make, call, expected):
    refused(make, call, expected)


def test_solver_settings_coerce_nothing():
    refused(lambda: SolverSettings(iterations_per_step=2.5), "SolverSettings(iterations_per_step=...)", "got 2.5")
    refused(lambda: SolverSettings(guard="no"), "SolverSettings(guard=...)", 'got "no"')


# ---- load_state_dict -----------------------------------------------------------------------------------
def test_load_state_dict_refuses_what_state_dict_did_not_write(shipped_optimizer):
    cloth = ClothSim(16, 16, optimizer=shipped_optimizer, colliders=[])
    refused(lambda: cloth.load_state_dict({}), "ClothSim.load_state_dict(state_dict=...)",
            "lacks fields, u, state, frame, records")
    refused(lambda: cloth.load_state_dict([]), "ClothSim.load_state_dict(state_dict=...)", "got list")
    other = ClothSim(20, 16, optimizer=shipped_optimizer, colliders=[]).state_dict()
    refused(lambda: cloth.load_state_dict(other), "ClothSim.load_state_dict(state_dict=...)", "another size")
    smoke = SmokeSim((16, 16), optimizer=shipped_optimizer)
    refused(lambda: smoke.load_state_dict({"u": 1}), "SmokeSim.load_state_dict(state_dict=...)", "it has: u")
    heat = DiffusionSim((16, 16), optimizer=shipped_optimizer)
    refused(lambda: heat.load_state_dict({}), "DiffusionSim.load_state_dict(state_dict=...)", "lacks fields")


# ---- absurd forces: SimulationDiverged naming the cause, never garbage frames ---------------------------
@pytest.mark.parametrize("kwargs", [dict(gravity=(0.0, 0.0, -1e6)), dict(wind=(1e6, 0.0, 0.0))])
def test_cloth_torn_by_absurd_forces_names_them(shipped_optimizer, kwargs):
    sim = ClothSim(16, 16, optimizer=shipped_optimizer, **kwargs)
    with pytest.raises(SimulationDiverged, match=r"ClothSim diverged at frame 1: max edge strain \S+ .* pull 800x "
                                                 r"harder than tension 250 N/m"):
        sim.step()
    assert sim.records == []  # the torn frame is no result


# (smoke beyond the grid: tests/test_sims_smoke.py::test_absurd_forces_are_refused_naming_them)


# ---- one vocabulary: the API's types are the spec schema's own entries -------------------------------
def _plain(t):
    return t.inner if isinstance(t, OrNone) else t


def test_sim_arguments_use_the_schema_entries_themselves():
    for key in CLOTH_SIM_KEYS + ("rows", "cols", "rest_positions"):
        assert _plain(cloth_module.ARGUMENTS[key]) is schema.CLOTH_SCHEMA[key].type, key
    for key in SMOKE_SIM_KEYS + ("resolution", "iterations_per_step", "tol"):
        assert _plain(smoke_module.ARGUMENTS[key]) is schema.SMOKE_SCHEMA[key].type, key


@pytest.mark.parametrize("kind, key, value", [
    ("cloth", "fps", "24"), ("cloth", "gravity", "down"), ("cloth", "contact_margin", 0), ("cloth", "guard", "no"),
    ("cloth", "colliders", [{"type": "sphere", "center": [0, 0, 0], "radius": "big"}]),
    ("smoke", "buoyancy", "x"), ("smoke", "density_tol", 1.5),
    ("smoke", "obstacle_shapes", [{"type": "circle", "radius": 3}]),
])
def test_the_api_and_a_spec_say_the_same(kind, key, value):
    with pytest.raises(schema.SpecError) as spec_info:
        schema.validate(kind, {key: value})
    spec_line = spec_info.value.errors[0]
    make = (lambda: ClothSim(16, 16, **{key: value})) if kind == "cloth" else (lambda: SmokeSim((32, 32), **{key: value}))
    api = refused(make, f"{'ClothSim' if kind == 'cloth' else 'SmokeSim'}({key}=...)")
    # the spec names the path (key: ...), the API the call and argument; the rest is one text, but for
    # Python's None/True/False where JSON says null/true/false
    body = api.split("=...): ", 1)[1]
    for python, json_word in (("None", "null"), ("True", "true"), ("False", "false")):
        body = body.replace(python, json_word)
    assert body == (spec_line[len(key) + 2:] if spec_line.startswith(f"{key}: ") else spec_line), (api, spec_line)


# ---- section 5: the first hour -----------------------------------------------------------------------
def test_write_pc2_takes_stacked_positions_in_field_order(shipped_optimizer, tmp_path):
    sim = ClothSim(16, 16, optimizer=shipped_optimizer, colliders=[], solver="metamizer", tol=None,
                   iterations_per_step=2)
    grid = []
    for _ in range(2):
        sim.step()
        grid.append(sim.positions)
    write_pc2(tmp_path / "grid.pc2", np.stack(grid))  # [F, rows, cols, 3]
    back, _, _ = read_pc2(tmp_path / "grid.pc2")
    assert back.shape == (2, NV, 3) and np.array_equal(back[-1], sim.field.astype(np.float32))
    with pytest.raises(ValueError, match=re.escape("[F, rows, cols, 3] (stacked ClothSim.positions)")):
        write_pc2(tmp_path / "bad.pc2", np.zeros((2, 3, 4, 5, 3)))


def test_every_sim_takes_threads(shipped_optimizer):
    heat = DiffusionSim((16, 16), threads=2, iterations_per_step=2, optimizer=shipped_optimizer)
    wave = WaveSim((16, 16), threads=1, iterations_per_step=2, optimizer=shipped_optimizer)
    flow = BurgersSim(np.zeros((2, 16, 16)), threads=1, iterations_per_step=2, optimizer=shipped_optimizer)
    assert (heat.threads, wave.threads, flow.threads) == (2, 1, 1)
    assert DiffusionSim((16, 16), optimizer=shipped_optimizer).threads == 1  # the rule of every sim
    heat.run(1)
    u, _ = solve_poisson(np.ones((16, 16)), iterations=3, threads=1, optimizer=shipped_optimizer)
    assert np.isfinite(u).all()
    refused(lambda: WaveSim((16, 16), threads=0, optimizer=shipped_optimizer), "WaveSim(threads=...)", "got 0")


def test_a_guard_count_says_what_it_means():
    note = guard_note(110, 1440)
    assert note.startswith("the step guard rejected 110 optimizer steps in 1440 optimizer iterations")
    assert "normal" in note and "worry only if frames also miss the tolerance" in note
