"""Facts written in one place, or checked to agree where a process boundary forces a copy (issue #16):
the cloth defaults (spec schema = ClothSim signature = Blender add-on properties), the held-out
seeds (metaphys/seeds.py, disjoint from training), temp-file-and-rename only in io/atomic.py."""
import ast
import inspect
import os
import re

import pytest

from metaphys import seeds
from metaphys.sims.cloth import ClothSim
from metaphys.spec import schema
from metaphys.spec.params import CLOTH_SIM_KEYS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# add-on property -> spec key, for the cloth settings the add-on writes into its spec
ADDON_CLOTH_KEYS = {"tension": "tension", "shear": "shear", "bending": "bending", "mass_per_area": "mass_per_area",
                    "air_damping": "air_damping", "wind": "wind", "substeps": "substeps", "solver": "solver",
                    "tolerance": "tol", "iterations": "iterations_per_step", "max_iterations": "max_iterations",
                    "newton_max_iterations": "newton_max_iterations", "strain_limit": "strain_limit"}


def addon_defaults(class_name: str) -> dict:
    """``default=`` of each property of a PropertyGroup in blender_addon/properties.py (the add-on
    runs inside Blender and cannot import metaphys, so its defaults are a copy read here as source)."""
    path = os.path.join(ROOT, "blender_addon", "properties.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    out = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Call):
            for kw in node.annotation.keywords:
                if kw.arg == "default":
                    out[node.target.id] = ast.literal_eval(kw.value)
    return out


def test_cloth_sim_defaults_are_the_schema_defaults():
    sig = inspect.signature(ClothSim).parameters
    for key in CLOTH_SIM_KEYS:
        assert key in sig, f"ClothSim has no parameter {key!r}"
        default = schema.CLOTH_SCHEMA[key].default
        if key == "threads" or default is None:
            continue
        sim_default = list(sig[key].default) if isinstance(default, list) else sig[key].default
        assert sim_default == default, (key, sim_default, default)


def test_addon_cloth_defaults_are_the_schema_defaults():
    props = addon_defaults("MetaphysClothSettings")
    for prop, key in ADDON_CLOTH_KEYS.items():
        default = schema.CLOTH_SCHEMA[key].default
        got = props[prop]
        if key == "solver":
            got = got.lower()
        elif isinstance(default, list):
            got = list(got)
        assert got == pytest.approx(default, rel=1e-12) if not isinstance(default, str) else got == default, \
            f"blender_addon/properties.py {prop} = {props[prop]!r}, spec schema {key} = {default!r}"


def test_addon_reader_sees_the_properties():  # the reader above must not pass by reading nothing
    props = addon_defaults("MetaphysClothSettings")
    assert props["tension"] == 250.0 and props["solver"] == "NEWTON" and len(props) >= len(ADDON_CLOTH_KEYS)


def test_held_out_seed_streams_are_disjoint_from_each_other_and_from_training():
    # training pools: cfg.seed * 7919 + 104729 * rank + 31 * pool, for any seed < 1000, 64 ranks, 100 pools
    train_max = 999 * 7919 + 104729 * 63 + 31 * 99
    # each held-out stream: base + offsets (grid sizes up to 10^4, quick's 1000 * k for k < 100, case seeds < 10^6)
    spans = sorted((base, base + 10**6) for base in seeds.HELD_OUT.values())
    assert spans[0][0] > train_max
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end < start


def _python_files(*folders):
    for folder in folders:
        for d, _, files in os.walk(os.path.join(ROOT, folder)):
            yield from (os.path.join(d, f) for f in files if f.endswith(".py"))


def test_no_seed_literal_outside_seeds_module():
    """A held-out seed is a named constant of metaphys/seeds.py, never a number written elsewhere."""
    found = []
    for path in _python_files("metaphys", "benchmarks"):
        if path.endswith(os.path.join("metaphys", "seeds.py")):
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.BinOp)):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any("SEED" in n for n in names):
                    found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not found, "held-out seeds defined outside metaphys/seeds.py: " + ", ".join(found)


# The one module that renames temporary files, and the add-on's one copy of it (the add-on runs in
# Blender's Python without metaphys). cache.py swaps whole cache folders (rename aside, rename in,
# roll back), a different operation. train/loop.py and eval/harness.py still write their own (their
# owner's work is in progress there: issue #16's hand-over lists the change for each).
ATOMIC_MODULES = {os.path.join("metaphys", "io", "atomic.py"), os.path.join("blender_addon", "common.py"),
                  os.path.join("blender_addon", "cache.py")}


def test_temp_file_and_rename_only_in_the_atomic_modules():
    pattern = re.compile(r"os\.replace\(|os\.rename\(|\.tmp\b")
    found = []
    for path in _python_files("metaphys", "blender_addon"):
        rel = os.path.relpath(path, ROOT)
        if rel in ATOMIC_MODULES:
            continue
        for k, line in enumerate(open(path, encoding="utf-8"), 1):
            if pattern.search(line):
                found.append(f"{rel}:{k}: {line.strip()}")
    assert not found, "temp-file-and-rename outside metaphys/io/atomic.py:\n" + "\n".join(found)


def test_addon_collider_shapes_are_the_collider_kinds():
    """The add-on (which cannot import metaphys) offers one Shape per kind of metaphys/colliders.py and
    writes only those kinds' spec ``type``s (issue #26: one list of collider kinds)."""
    from metaphys import colliders
    path = os.path.join(ROOT, "blender_addon", "properties.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MetaphysColliderSettings")
    shape = next(n for n in cls.body if isinstance(n, ast.AnnAssign) and n.target.id == "shape")
    items = ast.literal_eval(next(kw.value for kw in shape.annotation.keywords if kw.arg == "items"))
    assert sorted(i[0].lower() for i in items if i[0] != "AUTO") == sorted(k.name for k in colliders.KINDS)
    src = open(os.path.join(ROOT, "blender_addon", "extract_cloth.py"), encoding="utf-8").read()
    written = set(re.findall(r'"type": "(\w+)"', src))
    assert written and written <= set(colliders.BY_NAME), written
