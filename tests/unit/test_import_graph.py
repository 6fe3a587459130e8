"""No import circles in the wasmop package.

The graph is read from the source, not from a running interpreter, so it sees every module
whether or not something imports it. What counts as an edge from module A to module B:

* every ``import B`` and ``from B import name`` in A that runs when A is imported, i.e.
  anywhere outside a function body (module level, ``if``/``try`` blocks, class bodies),
  including ``if TYPE_CHECKING:`` blocks: a circle that only type checking closes is still
  two modules that each need the other;
* ``from P import name`` counts as an edge to the submodule ``P.name`` when that is a module
  of the package, and to ``P`` otherwise; relative imports are resolved first;
* only modules inside ``wasmop`` count, and a package's own ``__init__`` is not counted as
  imported by ``import P.sub`` (Python runs it, but every package's ``__init__`` that
  re-exports its submodules would otherwise form a trivial circle with each of them).

Imports inside functions are left out of that graph: the command-line front ends load
their area's modules lazily so that ``wasmop --help`` starts fast. A second test adds
them, because a circle closed by an import inside a function is a circle all the same,
only hidden until that function runs: no module may import a module that needs it back.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import wasmop

PACKAGE_DIR = Path(wasmop.__file__).resolve().parent


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _import_nodes(tree: ast.AST, in_functions: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported, and with ``in_functions``
    also those inside function bodies."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if not in_functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph(in_functions: bool = False) -> dict[str, set[str]]:
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _import_nodes(ast.parse(path.read_text(), str(path)), in_functions):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _resolve(name, is_package, node)
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "wasmop.runtime.engine" in graph["wasmop.runtime"]  # from wasmop.runtime.engine import
    assert "wasmop.console" in graph["wasmop.cli"]  # module level
    assert "wasmop.cluster.layout" in graph["wasmop.console"]
    # `from wasmop.node import fault_client` names a submodule
    assert "wasmop.node.fault_client" in graph["wasmop.node.agent"]


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    found = cycles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_circle_hidden_in_an_import_inside_a_function() -> None:
    graph = import_graph(in_functions=True)
    assert "wasmop.operator.app" in graph["wasmop.operator.cli"]  # a lazy import, counted
    found = cycles(graph)
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)
