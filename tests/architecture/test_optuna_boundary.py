"""One Optuna boundary: only ``hpo/storage/optuna_internals.py`` names Optuna's private parts.

Everything Optuna does not document (``optuna.storages._rdb``, ``Trial._trial_id``,
``Study._storage``, the journal's lock, ...) can change in any release; with all of it in one
module, an upgrade is checked in one place. Computed from the code with ``ast``:

- no ``import``/``from`` of an optuna module path with a component starting with ``_``;
- no attribute access ``x._name`` (one leading underscore, not a dunder) whose receiver is
  anything but ``self`` or ``cls``: ``study._storage``, ``trial._trial_id``, and hpo's own
  wrappers' ``storage._inner`` alike (those have public properties).

Only hpo/ is checked; tests and benchmarks may look inside.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

HPO = Path(__file__).resolve().parents[2] / "hpo"
BOUNDARY = HPO / "storage" / "optuna_internals.py"

# Private names of other libraries that hpo uses on purpose, by file: torch's base classes of
# every batch-norm and convolution layer (public subclasses would miss lazy and custom ones).
OTHER_LIBRARIES = {
    "models/_backbone_layers.py": {"_BatchNorm"},
    "models/init.py": {"_ConvNd"},
}


def _private_module(name: str | None) -> bool:
    parts = (name or "").split(".")
    return parts[0] == "optuna" and any(part.startswith("_") for part in parts)


def _private_attribute(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    """(line, what) for each private Optuna import and each ``x._name`` with ``x`` not
    ``self``/``cls`` in ``source``."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _private_module(alias.name):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if _private_module(node.module):
                yield node.lineno, f"from {node.module} import ..."
            elif (node.module or "").split(".")[0] == "optuna":
                for alias in node.names:
                    if _private_attribute(alias.name):
                        yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute) and _private_attribute(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            yield node.lineno, ast.unparse(node)


def test_the_boundary_module_exists_and_holds_the_private_uses():
    uses = [what for _, what in private_uses(BOUNDARY.read_text(), str(BOUNDARY))]
    assert any(what.startswith("from optuna.storages._rdb") for what in uses), uses
    assert any(what.endswith("._trial_id") for what in uses), uses
    assert any(what.endswith("._storage") for what in uses), uses


def test_only_the_boundary_names_optunas_private_parts():
    files = sorted(HPO.rglob("*.py"))
    assert BOUNDARY in files
    offences = []
    for path in files:
        if path == BOUNDARY:
            continue
        allowed = OTHER_LIBRARIES.get(path.relative_to(HPO).as_posix(), set())
        for line, what in private_uses(path.read_text(), str(path)):
            if what.rsplit(".", 1)[-1] not in allowed:
                offences.append(f"{path.relative_to(HPO.parent)}:{line}: {what}")
    assert not offences, (
        "private names outside hpo/storage/optuna_internals.py (add a function there, or a "
        "public property on hpo's own class):\n" + "\n".join(offences)
    )


def test_the_checker_sees_what_it_must():
    sample = (
        "import optuna.storages._rdb.models\n"
        "from optuna.storages._cached_storage import _CachedStorage\n"
        "from optuna.storages import _CachedStorage\n"
        "x = study._storage\n"
        "y = self.study._storage\n"
        "z = self._inner, cls._registry, obj.__class__, optuna.storages.RDBStorage\n"
    )
    assert sorted(private_uses(sample)) == [
        (1, "import optuna.storages._rdb.models"),
        (2, "from optuna.storages._cached_storage import ..."),
        (3, "from optuna.storages import _CachedStorage"),
        (4, "study._storage"),
        (5, "self.study._storage"),
    ]
