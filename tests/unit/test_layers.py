"""The layer order of docs/architecture.md, read from every import in the tree.

Layers, bottom up (a module imports only its own layer or lower ones):

1. vocabulary: ``nav.frames``, ``nav.transforms``, ``nav.arrays``, ``nav.messages`` (the
   types the bus carries)
2. ``nav.runtime``: the message runtime
3. ``calibration``
4. ``nav``: the navigation domain (everything else in ``nav``)
5. ``tracking`` and ``render``: peers, neither imports the other
6. ``cli``: the ``ornav`` command; nothing imports it

Imports inside functions count: a deferred import is still a dependency. Also no import
cycle between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("nav", "calibration", "tracking", "render", "cli")
VOCABULARY = ("nav.frames", "nav.transforms", "nav.arrays", "nav.messages")


def layer(module: str) -> tuple[int, str]:
    """(rank, name) of a project module; peers share a rank but not a name."""
    if any(module == v or module.startswith(v + ".") for v in VOCABULARY):
        return 1, "vocabulary"
    if module == "nav.runtime" or module.startswith("nav.runtime."):
        return 2, "nav.runtime"
    top = module.split(".")[0]
    return {
        "calibration": (3, "calibration"),
        "nav": (4, "nav"),
        "tracking": (5, "tracking"),
        "render": (5, "render"),
        "cli": (6, "cli"),
    }[top]


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """Every project module ``module`` imports (at any depth), with the line number."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*parent, base] if base else parent)
            if base.split(".")[0] not in PACKAGES:
                continue
            for (
                alias
            ) in node.names:  # `from nav import bus` names a module, `from nav.bus import X` not
                yield f"{base}.{alias.name}", node.lineno


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` starts with (a symbol's module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = project_modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    violations = []
    for module, path in modules.items():
        for imported, line in imports_of(path, module):
            target = resolve(imported, modules)
            if target is None or target == module:
                continue
            if module.startswith(target + "."):  # a module's own package __init__
                continue
            edges[module].add(target)
            (rank_from, name_from), (rank_to, name_to) = layer(module), layer(target)
            if rank_to > rank_from or (rank_to == rank_from and name_to != name_from):
                rel = path.relative_to(REPO)
                violations.append(
                    f"{rel}:{line}: {module} ({name_from}) imports {target} ({name_to})"
                )
    return edges, violations


def test_nothing_imports_upward_or_across_peers() -> None:
    _, violations = graph()
    assert violations == [], "\n".join(violations)


def test_no_import_cycle_between_modules() -> None:
    edges, _ = graph()
    # Tarjan's strongly connected components; any component of 2+ modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert cycles == [], cycles


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("nav.runtime.bus", "nav.messages", True),
        ("nav.runtime.bus", "nav.navigation", False),
        ("calibration.files", "nav.runtime.bus", True),
        ("nav.nav_node", "calibration.files", True),
        ("calibration.files", "nav.case", False),
        ("render.scene", "tracking.sim_model", False),
        ("nav.case", "cli.errors", False),
    ],
)
def test_the_layer_rule_itself(importer: str, imported: str, allowed: bool) -> None:
    (rank_from, name_from), (rank_to, name_to) = layer(importer), layer(imported)
    ok = rank_to < rank_from or (rank_to == rank_from and name_to == name_from)
    assert ok is allowed
