"""ARCHITECTURE.md's "Adding an export format" recipe, checked for every format module in metaphys/io
(the "Adding a PDE" recipe is checked by test_op_registry.py): listed in the package docstring,
tested by its own file, free of bpy and of the physics, writing only through io/atomic.py."""
import ast
import os

import pytest

import metaphys.io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IO = os.path.join(ROOT, "metaphys", "io")
FORMATS = sorted(f[:-3] for f in os.listdir(IO) if f.endswith(".py") and f != "__init__.py")
ABOVE_IO = ("metaphys.physics", "metaphys.optim", "metaphys.sims", "metaphys.bake", "metaphys.train", "metaphys.eval")


def imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_the_io_modules_are_found():
    assert {"atomic", "pc2", "vdb", "meshseq", "usd"} <= set(FORMATS)


@pytest.mark.parametrize("name", FORMATS)
def test_listed_in_the_package_docstring(name):
    assert f"``{name}``" in metaphys.io.__doc__, f"metaphys/io/__init__.py does not list {name}"


@pytest.mark.parametrize("name", FORMATS)
def test_has_its_own_test_file(name):
    path = os.path.join(ROOT, "tests", f"test_io_{name}.py")
    assert os.path.isfile(path), f"tests/test_io_{name}.py is missing"
    tree = ast.parse(open(path, encoding="utf-8").read())
    imports = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imports |= {f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for a in node.names}
    assert f"metaphys.io.{name}" in imports, f"tests/test_io_{name}.py does not import metaphys.io.{name}"


@pytest.mark.parametrize("name", FORMATS)
def test_imports_neither_bpy_nor_the_physics(name):
    bad = [m for m in imported_modules(os.path.join(IO, f"{name}.py"))
           if m.split(".")[0] == "bpy" or m.startswith(ABOVE_IO)]
    assert not bad, f"metaphys/io/{name}.py imports {bad}"
