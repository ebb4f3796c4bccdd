"""No import cycle inside the package, lazy imports included.

import-linter builds its graph from module-level imports only; an import inside a function
(``make_sink`` importing the sink it chooses) is invisible to it. This test reads every
import statement of every module with :mod:`ast`, wherever it stands, and fails on a
cycle. Imports under ``if TYPE_CHECKING:`` never run, so they are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

PACKAGE = Path(__file__).parent.parent / "recorder"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str, source: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports when it runs, at any depth."""
    edges: set[str] = set()
    for node in _runtime_imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub when there is one
            targets = [origin] + [f"{origin}.{alias.name}" for alias in node.names]
        edges.update(t for t in targets if t in modules and t != name)
    return edges


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {
        name: imports_of(name, path.read_text(), path.name == "__init__.py", modules)
        for name, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    # make_sink imports its implementations inside the function
    assert {"recorder.sinks.sqlite", "recorder.sinks.questdb"} <= graph["recorder.sinks"]
    assert "recorder.protocol" in graph["recorder.batching"]


def test_no_import_cycle_inside_the_package() -> None:
    assert cycles(import_graph()) == []


def test_a_cycle_through_a_function_level_import_is_found() -> None:
    modules = {"recorder.a", "recorder.b"}
    a = "def f():\n    from . import b\n"
    b = "from .a import f\n"
    graph = {
        "recorder.a": imports_of("recorder.a", a, False, modules),
        "recorder.b": imports_of("recorder.b", b, False, modules),
    }
    assert cycles(graph) == [["recorder.a", "recorder.b"]]


def test_type_checking_imports_are_not_edges() -> None:
    modules = {"recorder.a", "recorder.b"}
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n"
    assert imports_of("recorder.a", source, False, modules) == set()


@given(st.dictionaries(st.sampled_from("abcdef"), st.sets(st.sampled_from("abcdef"))))
def test_cycles_are_exactly_the_mutually_reachable_sets(edges: dict[str, set[str]]) -> None:
    graph = {v: {w for w in ws if w != v} for v, ws in edges.items()}

    def reach(v: str) -> set[str]:
        seen: set[str] = set()
        todo = [v]
        while todo:
            for w in graph.get(todo.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    found = cycles(graph)
    in_cycle = {v for component in found for v in component}
    for v in graph:
        assert (v in reach(v)) == (v in in_cycle)
    for component in found:
        assert all(w in reach(v) for v in component for w in component)
