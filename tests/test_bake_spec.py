"""Bake spec schema: every bad value is named by its key path with what was expected; defaults come
from the schema; the docs tables are generated from it."""

import numpy as np
import pytest

from metaphys.spec import schema as S
from metaphys.spec.params import cloth_parameters, smoke_parameters


def errors_of(kind, spec, **kw):
    with pytest.raises(S.SpecError) as info:
        S.validate(kind, spec, **kw)
    return info.value


@pytest.mark.parametrize("spec, expected", [
    ({"colliders": {"type": "sphere", "center": [0, 0, 1], "radius": 0.2}},
     'colliders: expected a list of colliders, got {"type"'),
    ({"colliders": [[0, 0, 1, 0.2]]}, 'colliders[0]: expected an object with "type": "sphere" or "box" or "mesh", got [0, 0, 1, 0.2]'),
    ({"colliders": "sphere"}, 'colliders: expected a list of colliders, got "sphere"'),
    ({"frames": "ten"}, 'frames: expected an integer in [1, 1048574], got "ten"'),
    ({"frames": None}, "frames: expected an integer in [1, 1048574], got null"),
    ({"frames": 2.7}, "frames: expected an integer in [1, 1048574], got 2.7"),
    ({"frames": -5}, "frames: expected an integer in [1, 1048574], got -5"),
    ({"frames": True}, "frames: expected an integer in [1, 1048574], got true"),
    ({"substeps": 1.5}, "substeps: expected an integer in [1, 1000], got 1.5"),
    ({"tension": True}, "tension: expected a number > 0 (N/m), got true"),
    ({"stretch": True}, 'stretch: this key was replaced by "tension" (membrane stretch stiffness in N/m'),
    ({"bend": 0.1}, 'bend: this key was replaced by "bending" (bending stiffness in N*m'),
    ({"damping": 0.1}, 'damping: this key was replaced by "air_damping" (velocity damping in 1/s'),
    ({"colliders": [{"type": "sphere", "center": [0, 0, 1], "radius": 0.1},
                    {"type": "sphere", "center": [0, 0, 1], "radius": "big"}]},
     'colliders[1].radius: expected a number > 0 (metres), got "big"'),
    ({"colliders": [{"type": "sphere", "center": [0, 0, 1], "radius": 0.1, "friction": -0.5}]},
     "colliders[0].friction: expected a number >= 0"),
    ({"colliders": [{"type": "sphere", "center": [0, 0, 1], "radius": 0.1, "rotation": [0, 0, 0]}]},
     "colliders[0].rotation: unknown key"),
    ({"colliders": [{"type": "box", "center": [0, 0, 1], "half_extent": [1, 1, 1]}]},
     'colliders[0].half_extent: unknown key; did you mean "half_extents"?'),
    ({"colliders": [{"type": "cube", "center": [0, 0, 1]}]}, 'colliders[0].type: expected one of "sphere", "box", "mesh", got "cube"'),
    ({"colliders": [{"type": "sphere", "center": [0, 1], "radius": 1}]},
     "colliders[0].center: expected a list of 3 numbers [x, y, z] (metres), or a per-frame list of them, got [0, 1]"),
    ({"framse": 3}, 'framse: unknown key; did you mean "frames"?'),
    ({"gravity": [0, 0, "down"]}, 'gravity: expected a list of 3 numbers (m/s^2), got [0, 0, "down"]'),
    ({"fps": 0}, "fps: expected a number in [1, 1000] (frames per second), got 0"),
    ({"fps": float("nan")}, "fps: expected a number in [1, 1000]"),
    ({"solver": "newtn"}, 'solver: expected one of "auto", "metamizer", "newton", got "newtn" (did you mean "newton"?)'),
    ({"tol": None}, 'tol: null is only allowed with solver "metamizer"'),
    ({"guard": "yes"}, 'guard: expected true or false, got "yes"'),
    ({"rows": 16, "cols": 16, "pin_weights": [2.0] * 256}, "pin_weights: expected values in [0, 1], got 2"),
    ({"rows": 16, "cols": 16, "pin_weights": [0.5] * 255}, "pin_weights: expected 256 numbers (rows*cols), got shape [255]"),
    ({"rows": 16, "cols": 16, "vertex_index": [0] * 256}, "vertex_index: expected a permutation of 0..255"),
    ({"rows": 16, "cols": 16, "vertex_index": [0.5] * 256}, "vertex_index[0]: expected an integer"),
    ({"rest_positions": [[0, 0, "a"]]}, 'rest_positions[0][2]: expected a number'),
    ({"rows": 8}, "rows: expected an integer in [16, 4096], got 8"),
    ({"threads": 0}, "threads: expected an integer >= 1 or null, got 0"),
])
def test_cloth_spec_errors_name_the_path_and_expectation(spec, expected):
    e = errors_of("cloth", spec)
    assert expected in str(e), str(e)


@pytest.mark.parametrize("spec, expected", [
    ({"vdb": "no"}, 'vdb: expected true or false, got "no"'),
    ({"png_max": 0}, "png_max: expected a number > 0 (density), got 0"),
    ({"fps": -5}, "fps: expected a number in [1, 1000] (frames per second), got -5"),
    ({"frames": -3}, "frames: expected an integer in [1, 1048574], got -3"),
    ({"obstacle_shapes": [{"type": "circle", "center": [8, 8]}]},
     "obstacle_shapes[0].radius: missing (expected a number > 0 (cells))"),
    ({"obstacle_shapes": {"type": "circle"}}, "obstacle_shapes: expected a list of obstacle shapes"),
    ({"resolution": [16, 15.5]}, "resolution: expected a list of 2 integers >= 16 and <= 4096 [rows, cols] (cells), got [16, 15.5]"),
    ({"resolution": [16, 16], "emitters": np.zeros((16, 15)).tolist()}, "emitters: expected shape [16, 16]"),
    ({"resolution": [16, 16], "obstacles": (np.ones((16, 16)) * 2).tolist()}, "obstacles: expected values in [0, 1]"),
    ({"emitters": "missing.npy"}, "emitters: file not found: missing.npy"),
    ({"buoyancy": "up"}, 'buoyancy: expected a number (m/s^2 per unit density), got "up"'),
    ({"cfl": 0}, "cfl: expected a number > 0 (cells per fluid step), got 0"),
    ({"size_m": 2.0, "cell_size": 0.1, "resolution": [16, 32]},
     "cell_size: expected size_m / max(rows, cols) = 0.0625 metres (or no cell_size), got 0.1"),
    ({"density_tol": 1e-6}, "density_tol: this key was removed: the density transport is explicit and monotone"),
])
def test_smoke_spec_errors(spec, expected):
    e = errors_of("smoke", spec)
    assert expected in str(e), str(e)


@pytest.mark.parametrize("kind", ["cloth", "smoke"])
@pytest.mark.parametrize("spec, expected", [
    # each of these crashed the CLI (OverflowError) or started a bake that never ends
    ({"start_frame": 10 ** 400}, "start_frame: expected an integer in [-1048574, 1048574], got an integer of 401 digits"),
    ({"frames": 10 ** 400}, "frames: expected an integer in [1, 1048574], got an integer of 401 digits"),
    ({"fps": 1e-300}, "fps: expected a number in [1, 1000] (frames per second), got 1e-300"),
    ({"fps": 10 ** 400}, "fps: expected a number in [1, 1000] (frames per second), got an integer of 401 digits"),
    ({"start_frame": 1048570, "frames": 10}, "frames: expected start_frame + frames - 1 <= 1048574"),
    ({"iterations_per_step": 2 ** 40}, "iterations_per_step: expected an integer >= 1, at most 2147483647 in size, "
                                       "got 1099511627776"),
])
def test_huge_numbers_are_refused_by_the_schema(kind, spec, expected):
    assert expected in str(errors_of(kind, spec))


def test_huge_numbers_inside_lists_are_refused():
    assert "gravity: expected a list of 3 numbers (m/s^2)" in str(errors_of("cloth", {"gravity": [10 ** 400, 0, 0]}))
    e = errors_of("cloth", {"rows": 16, "cols": 16, "pin_weights": [10 ** 400] * 256})
    assert "pin_weights: expected finite numbers" in str(e)


def test_deeply_nested_values_are_refused_before_anything_recurses():
    deep = 0
    for _ in range(100_000):
        deep = [deep]
    assert "nests more than 16 levels deep" in str(errors_of("cloth", {"rest_positions": deep}))


def test_all_problems_are_reported_at_once():
    e = errors_of("cloth", {"frames": "ten", "fps": -1, "stretch": 3, "colliders": [{"type": "box"}]})
    assert len(e.errors) == 5, e.errors  # frames, fps, stretch, colliders[0].center, colliders[0].half_extents
    assert str(e).startswith("invalid cloth spec (5 problems):")


def test_truncated_npy_is_a_clear_error(tmp_path):
    path = tmp_path / "em.npy"
    np.save(path, np.zeros((16, 16)))
    path.write_bytes(path.read_bytes()[:60])
    e = errors_of("smoke", {"resolution": [16, 16], "emitters": str(path)})
    assert f"emitters: cannot read {path} as a .npy array" in str(e)


def test_defaults_come_from_the_schema_and_integer_like_numpy_values_pass():
    p = cloth_parameters({"rows": np.int64(16), "fps": np.float32(30)}, size=20)
    assert p["rows"] == 16 and type(p["rows"]) is int and p["cols"] == 16 and p["fps"] == 30.0
    assert p["tension"] == S.CLOTH_SCHEMA["tension"].default == 250.0
    assert p["solver"] == S.CLOTH_SCHEMA["solver"].default == "newton" and p["strain_limit"] == 0.5
    assert p["tol"] == S.CLOTH_SCHEMA["tol"].default == 1e-5
    assert len(p["colliders"]) == 1  # the default scene's sphere
    assert cloth_parameters({}, size=20)["rows"] == 20
    assert cloth_parameters({"rest_positions": np.zeros((256, 3)).tolist(), "rows": 16})["colliders"] is None
    s = smoke_parameters({}, size=32)
    assert s["resolution"] == [32, 32] and s["buoyancy"] == S.SMOKE_SCHEMA["buoyancy"].default
    assert s["vdb"] is True and s["tol"] is None
    assert S.validate("cloth", {"solver": "metamizer", "tol": None})["tol"] is None


def test_schema_defaults_validate_against_their_own_types():
    for kind, schema in S.SCHEMAS.items():
        for name, key in schema.items():
            if key.default is not None:
                assert key.type.check(key.default, name) == key.default, (kind, name)


def test_non_object_spec():
    assert "the spec must be a JSON object, got [1, 2]" in str(errors_of("cloth", [1, 2]))


def test_docs_tables_are_generated_from_the_schema(tmp_path):
    with open(S.docs_path(), encoding="utf-8") as fh:
        text = fh.read()
    assert S.render_docs(text) == text, "docs/bake-spec.md is stale: python -m metaphys.spec.schema --write-docs"
    for kind, schema in S.SCHEMAS.items():
        for name in schema:
            assert f"| `{name}` |" in text, (kind, name)
    stale = tmp_path / "spec.md"
    stale.write_text(text.replace("| `tension` | a number > 0 (N/m) | `250.0` |", "| `tension` | x | 1 |"))
    assert S.update_docs(str(stale), check=True) is False
    assert S.update_docs(str(stale)) and stale.read_text() == text


def test_property_limits_for_uis():
    lim = S.property_limits("cloth")
    assert lim["tension"] == {"default": 250.0, "description": "membrane stretch stiffness", "type": "float",
                              "min": 0, "max": None, "min_exclusive": True, "max_exclusive": False, "unit": "N/m",
                              "nullable": False}
    assert lim["substeps"]["type"] == "int" and lim["substeps"]["min"] == 1
    assert lim["solver"]["options"] == ["auto", "metamizer", "newton"] and lim["guard"]["type"] == "bool"
    assert lim["gravity"]["size"] == 3 and "colliders" not in lim and "rest_positions" not in lim
    assert S.property_limits("smoke")["cfl"]["min_exclusive"] and S.property_limits("smoke")["vdb"]["default"] is True


def test_smoke_scale_comes_from_size_m_or_cell_size():
    assert smoke_parameters({"resolution": [16, 32]})["cell_size"] == 1.0 / 32  # size_m 1 m: the longer side
    p = smoke_parameters({"resolution": [16, 32], "cell_size": 0.1})           # a DCC tool's cell, no size_m
    assert p["size_m"] == pytest.approx(3.2) and p["cell_size"] == 0.1
    p = smoke_parameters({"resolution": [16, 32], "size_m": 2.0, "cell_size": 0.0625})  # both, agreeing
    assert p["size_m"] == 2.0 and p["cell_size"] == 0.0625


def test_smoke_schema_defaults_are_the_smoke_sims_defaults():
    import inspect
    from metaphys.sims.smoke import SmokeSim
    sig = inspect.signature(SmokeSim).parameters
    for key in ("size_m", "fps", "substeps", "cfl", "emitter_density", "emitter_velocity", "buoyancy", "viscosity",
                "density_diffusion", "wind", "emitter_heat", "heat_buoyancy", "cooling", "iterations_per_step",
                "max_iterations"):
        default = S.SMOKE_SCHEMA[key].default
        sim_default = list(sig[key].default) if isinstance(default, list) else sig[key].default
        assert sim_default == default, (key, sim_default, default)


def test_output_matrix_is_one_or_one_per_frame(tmp_path):
    """An animated object's world -> local transform goes to the engine per frame, so the cache is
    written in the object's space and no client rewrites it."""
    from metaphys.bake.cloth import ClothWriter
    shift = [np.eye(4) for _ in range(2)]
    shift[1][:3, 3] = [1.0, 2.0, 3.0]
    p = cloth_parameters({"rows": 16, "output_matrix": np.array(shift).tolist()})
    w = ClothWriter(str(tmp_path), p, fmt="none")
    grid = np.arange(16 * 16 * 3, dtype=np.float64).reshape(-1, 3)
    assert np.array_equal(w._to_output(grid, 0), grid)
    assert np.array_equal(w._to_output(grid, 1), grid + [1.0, 2.0, 3.0])
    assert np.array_equal(w._to_output(grid, 7), grid + [1.0, 2.0, 3.0])  # a shorter list holds its last entry
    assert np.array_equal(ClothWriter(str(tmp_path), cloth_parameters({"rows": 16, "output_matrix": shift[1].tolist()}),
                                      fmt="none")._to_output(grid, 5), grid + [1.0, 2.0, 3.0])
    with pytest.raises(S.SpecError, match=r"output_matrix: expected shape \[4, 4\] or \[frames, 4, 4\]"):
        cloth_parameters({"output_matrix": np.zeros((2, 3, 4)).tolist()})
