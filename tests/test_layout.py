"""The package's layout: no two modules of runtime/ import each other, however indirectly.

A cycle means two concepts that cannot be read, tested or taught one before the other. An
import inside a function counts too: it only delays the cycle to the first call.
These run anywhere: they read the sources, they import nothing.
"""

from __future__ import annotations

import ast
import pathlib

from conftest import REPO

PACKAGE = pathlib.Path(REPO, "runtime")


def imported_modules(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The modules of the package that ``path`` imports, at any depth of its code (a module,
    or ``__init__`` for a name of the package itself, such as ``__version__``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            found.update(name.split(".")[1] for name in names if name.startswith("runtime."))
        elif isinstance(node, ast.ImportFrom):
            module = (
                node.module if not node.level else ".".join(filter(None, ("runtime", node.module)))
            )
            if module == "runtime":
                found.update(a.name if a.name in modules else "__init__" for a in node.names)
            elif module.startswith("runtime."):
                found.add(module.split(".")[1])
    return found - {path.stem}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    return {path.stem: imported_modules(path, modules) for path in PACKAGE.glob("*.py")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_function_level_imports_are_seen():
    """The graph is no vacuous pass: it has the package's lazy imports, such as
    filesystem's import of layer for the rare copy fallback of mount_layers."""
    graph = import_graph()
    assert "layer" in graph["filesystem"]
    assert "syscalls" in graph["filesystem"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    found = [
        ", ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component)
        for component in cycles(graph)
    ]
    assert not found, "import cycles in runtime/ (move the helper to where it belongs): " + (
        "; ".join(found)
    )
