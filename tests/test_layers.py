"""The layout keeps the architecture of DESIGN.md: a layer imports only layers below
it, only what another subpackage exports from its ``__init__`` (never its private
modules), and no two files import each other in a cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "latentdb"

# Each part of the package and its layer: a part may import parts of lower layers
# (and its own). Data flows from the top (the CLI) to the bottom (errors).
LAYERS = {
    "errors": 0,
    "_version": 0,
    "_extras": 0,
    "_closeable": 0,
    "space": 1,
    "store": 2,
    "index": 2,
    "embed": 2,
    "query": 3,
    "analysis": 3,
    "api": 4,
    "engine": 5,
    "ingest": 6,
    "client": 6,
    "server": 7,
    "distributed": 7,
    "_connect": 8,
    "demo": 8,
    "integrations": 9,
    "cli": 10,
    "__init__": 11,
}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _part(module: str) -> str:
    """The layer part a module belongs to: ``latentdb.index._flat`` -> ``index``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, whether at run time) for each latentdb import; names
    imported from a package count as its submodules where they are modules."""
    tree = ast.parse(path.read_text())
    checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            checking.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        runtime = id(node) not in checking
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("latentdb"):
                    yield node.lineno, alias.name, runtime
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if not source.startswith("latentdb"):
                continue
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                submodule = PACKAGE.parent / Path(*candidate.split("."))
                is_module = submodule.with_suffix(".py").exists() or submodule.is_dir()
                yield node.lineno, candidate if is_module else source, runtime


def test_every_part_has_a_layer() -> None:
    parts = {_part(module) for module, _ in _modules()}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


def test_no_import_of_another_subpackage_private_module() -> None:
    found = []
    for module, path in _modules():
        for line, imported, _ in _imports(module, path):
            if _part(imported) == _part(module):
                continue
            private = [p for p in imported.split(".")[2:] if p.startswith("_")]
            if private and f"{path.relative_to(PACKAGE.parent)}:{line}" not in str(found):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert not found, "\n".join(found)


def test_no_upward_import() -> None:
    found = []
    for module, path in _modules():
        mine = LAYERS[_part(module)]
        for line, imported, _ in _imports(module, path):
            # The package root (``import latentdb``) is the top layer.
            theirs = LAYERS["__init__"] if imported == "latentdb" else LAYERS[_part(imported)]
            if theirs > mine:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert not found, "\n".join(found)


def test_no_import_cycle_between_files() -> None:
    modules = dict(_modules())
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for _, imported, runtime in _imports(module, path):
            while imported not in modules and "." in imported:
                imported = imported.rpartition(".")[0]
            if runtime and imported != module and imported in modules:
                graph[module].add(imported)
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)
