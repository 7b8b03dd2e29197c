"""The engine's shape: no import cycles between the modules of ``pruning/`` and no module above
400 lines (DESIGN.md, "House habits").

The import graph is read from the source with ``ast`` (nothing is imported): every import
statement counts, wherever it stands (module level, inside a function, under an ``if``), since an
import inside a function only postpones the cycle. ``import pruning.a.b`` and
``from pruning.a.b import c`` also import the packages ``pruning`` and ``pruning.a``, because
Python runs a package's ``__init__`` before any of its submodules; ``from pruning.a import b``
imports the submodule ``pruning.a.b`` when ``b`` is one.
"""

import ast
from collections import deque
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "pruning"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ENGINE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def engine_modules() -> dict[str, Path]:
    """``{dotted name: file}`` for every module and package of ``pruning/``."""
    return {module_name(path): path for path in sorted(ENGINE.rglob("*.py")) if "__pycache__" not in path.parts}


def with_packages(name: str) -> list[str]:
    """``pruning.a.b`` -> ``[pruning, pruning.a, pruning.a.b]``: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[: index + 1]) for index in range(len(parts))]


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name that the module ``name`` (the file ``path``) imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..a import b
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # kept only where a submodule
    return names


def import_graph() -> dict[str, set[str]]:
    """``{module: the engine modules it imports}``, packages included as described above."""
    modules = engine_modules()
    graph = {}
    for name, path in modules.items():
        targets = {package for imported in imported_names(name, path) for package in with_packages(imported)}
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def shortest_cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest path ``start -> ... -> start`` (breadth first), or None."""
    came_from = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target == start:
                path = [node]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through every module that lies on a cycle, each cycle listed once."""
    found, seen = [], set()
    for module in sorted(graph):
        cycle = shortest_cycle_through(graph, module)
        if cycle is None:
            continue
        turn = cycle.index(min(cycle[:-1]))
        key = tuple(cycle[turn:-1] + cycle[:turn])  # the same cycle, whichever module it was found from
        if key not in seen:
            seen.add(key)
            found.append([*key, key[0]])
    return found


def test_the_engine_has_no_import_cycles():
    graph = import_graph()
    assert "pruning.cli" in graph and graph["pruning.cli"], "the import graph was not read"
    found = cycles(graph)
    if found:
        pytest.fail(f"{len(found)} import cycles in pruning/:\n" + "\n".join(" -> ".join(c) for c in found), pytrace=False)


def test_no_engine_module_is_above_400_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in engine_modules().items()}
    too_long = {name: count for name, count in sorted(lengths.items()) if count > MAX_LINES}
    if too_long:
        pytest.fail(f"modules above {MAX_LINES} lines: " + ", ".join(f"{n} ({c})" for n, c in too_long.items()), pytrace=False)
