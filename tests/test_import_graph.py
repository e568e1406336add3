"""No import loops (issue #16): the package's modules, and its subpackages, import in one direction.

The graph is read from the source (``ast``), not by importing, so a loop that happens to work today
because one side imports inside a function still fails here: every ``import`` statement counts,
wherever it stands (only ``if TYPE_CHECKING:`` blocks are left out; they never run)."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "metaphys"


def module_files():
    """module name -> path, for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _type_checking_block(node) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _import_nodes(tree):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if not _type_checking_block(child))


def imports_of(name: str, path: str, modules) -> set:
    """The package's modules that ``name`` imports (``from pkg import sub`` names the submodule)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    out = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            out.add(full if full in modules else base)
    return {m for m in out if m in modules and m != name}


def import_graph():
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One cycle as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def subpackage_graph(graph):
    """metaphys.<sub> -> the other subpackages (and top-level modules) it imports; the root is left out."""
    def top(m):
        return ".".join(m.split(".")[:2])
    out = {}
    for m, targets in graph.items():
        if m == PACKAGE:
            continue
        out.setdefault(top(m), set()).update(top(t) for t in targets if t != PACKAGE and top(t) != top(m))
    return out


def test_the_graph_sees_the_imports_it_must():
    g = import_graph()
    assert "metaphys.sims.cloth" in g["metaphys.bake.cloth"]      # module level
    assert "metaphys.optim.fast" in g["metaphys.sims.common"]     # inside a function
    assert "metaphys.problems" in g["metaphys.train.pools"]       # `from metaphys import problems`
    assert "metaphys._C" not in g and "metaphys" in g["metaphys._ops"]  # the compiled module is no source


@pytest.mark.parametrize("graph, what", [({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
                                         ({"a": {"b"}, "b": set()}, None)])
def test_find_cycle(graph, what):
    assert find_cycle(graph) == what


def test_no_module_imports_itself_through_others():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import loop: " + " -> ".join(cycle)


def test_subpackages_import_in_one_direction():
    cycle = find_cycle(subpackage_graph(import_graph()))
    assert cycle is None, "subpackage import loop: " + " -> ".join(cycle)


# ARCHITECTURE.md's import layers: metaphys.<name> may import only from earlier layers
LAYERS = [["version"], ["seeds", "registry", "io", "colliders"], ["_fake"], ["_ops"], ["physics"], ["problems", "spec", "optim"],
          ["sims"], ["bake", "eval"], ["train"], ["cli"], ["__main__"]]


def test_subpackages_follow_the_documented_layers():
    layer = {f"{PACKAGE}.{name}": k for k, names in enumerate(LAYERS) for name in names}
    graph = subpackage_graph(import_graph())
    assert set(graph) <= set(layer), f"not in LAYERS (add it here and in ARCHITECTURE.md): {set(graph) - set(layer)}"
    wrong = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer[b] >= layer[a]]
    assert not wrong, "imports against the layers: " + ", ".join(sorted(wrong))
