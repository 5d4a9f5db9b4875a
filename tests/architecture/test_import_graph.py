"""hpo's floor plan, computed from the code: no import circles, one-way package imports.

Every ``import`` and ``from ... import`` counts, at module level or inside a function, under
``TYPE_CHECKING`` or not: a circle hidden in a function body is still a circle to a reader.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

HPO = Path(__file__).resolve().parents[2] / "hpo"

# Who may import whom, package by package: the layers of the design, top to bottom. A
# package may import its own modules, the ones listed for it, and the bottom modules.
BOTTOM = {"hpo.errors", "hpo.registry"}
# Modules any layer may import although their package sits higher: leaves that import nothing
# from hpo. hpo.study.attrs is the schema of the study and trial attributes, which the
# artifacts (below the study layer) write too. hpo.storage.optuna_internals is the one module
# that names Optuna's private parts, which the spec layer's samplers need too (the unique
# random sampler marks its pick in the trial; the shared grid seeds its pick).
LEAVES = {"hpo.study.attrs", "hpo.storage.optuna_internals"}
ALLOWED = {
    # The package itself, at the very top: ``hpo.load_results`` and the rest, lazily from
    # hpo.api; so nothing in hpo imports ``hpo`` (its version comes from the package metadata).
    "hpo": {"hpo.api"},
    "hpo.cli": {"hpo.api", "hpo.results", "hpo.worker", "hpo.study", "hpo.artifacts", "hpo.spec",
                "hpo.storage"},
    # The Python API: the library the CLI runs on, one layer above what it combines.
    "hpo.api": {"hpo.results", "hpo.worker", "hpo.study", "hpo.artifacts", "hpo.spec", "hpo.training",
                "hpo.models", "hpo.storage"},
    "hpo.results": {"hpo.worker", "hpo.study", "hpo.artifacts", "hpo.spec", "hpo.training",
                    "hpo.models", "hpo.storage"},
    "hpo.worker": {"hpo.study", "hpo.artifacts", "hpo.spec", "hpo.training", "hpo.models",
                   "hpo.storage"},
    "hpo.study": {"hpo.artifacts", "hpo.spec", "hpo.storage"},
    "hpo.artifacts": {"hpo.spec", "hpo.storage"},
    "hpo.spec": {"hpo.training", "hpo.models"},
    "hpo.training": {"hpo.models"},
    "hpo.models": set(),
    "hpo.storage": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(HPO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The hpo modules ``path`` imports (``from hpo.x import y`` names hpo.x.y if that is a
    module, else hpo.x)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "hpo")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "hpo":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found & known


def import_graph() -> dict[str, set[str]]:
    files = sorted(HPO.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, known) - {module_name(f)} for f in files}


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_the_graph_is_read_from_the_code():
    graph = import_graph()
    assert "hpo.storage.urls" in graph["hpo.worker.loop"]
    assert len(graph) > 50


def test_no_module_import_circles():
    graph = import_graph()
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_no_package_import_circles():
    packages: dict[str, set[str]] = {}
    for module, imports in import_graph().items():
        packages.setdefault(package_of(module), set()).update(package_of(m) for m in imports - LEAVES)
    for package, imports in packages.items():
        imports.discard(package)
    try:
        graphlib.TopologicalSorter(packages).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"package import circle: {' -> '.join(exc.args[1])}")


def test_packages_import_only_the_layers_below():
    wrong = []
    for module, imports in import_graph().items():
        package = package_of(module)
        if package not in ALLOWED:
            continue
        for imported in imports:
            target = package_of(imported)
            if target != package and target not in BOTTOM and target not in ALLOWED[package] \
                    and imported not in LEAVES:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(sorted(wrong))


def test_leaves_import_nothing_from_hpo():
    graph = import_graph()
    assert {leaf: graph[leaf] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


def test_the_top_level_is_small():
    entries = sorted(p.name for p in HPO.iterdir() if not p.name.startswith((".", "__pycache__")))
    assert len(entries) <= 14, entries
