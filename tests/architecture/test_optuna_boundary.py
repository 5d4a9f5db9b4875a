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


# ``self._x`` and ``cls._x`` are hpo's own only where hpo defines ``_x``: in the class, or in
# one of hpo's classes it derives from. Anything else is a base class's private part (an
# Optuna sampler's ``_rng``, a storage's ``_backend``), which belongs behind the boundary too.
_Classes = dict[str, list[tuple[set[str], list[str]]]]  # name -> [(defined names, base names)]


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):  # Generic[T], Protocol[...]
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _own_nodes(cls: ast.ClassDef) -> Iterator[ast.AST]:
    """The nodes of ``cls``'s body, not descending into the classes nested in it."""
    stack: list[ast.AST] = list(cls.body)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if not isinstance(child, ast.ClassDef))


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _defined(cls: ast.ClassDef) -> set[str]:
    """What ``cls`` defines itself: methods, class attributes, ``self.x = ...`` anywhere in it."""
    names: set[str] = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    for node in _own_nodes(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
            names.add(node.attr)
    return names


def hpo_classes(trees: list[ast.AST]) -> _Classes:
    classes: _Classes = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [name for name in map(_base_name, node.bases) if name]
                classes.setdefault(node.name, []).append((_defined(node), bases))
    return classes


def _inherited(name: str, classes: _Classes, seen: set[str] | None = None) -> set[str]:
    """What the hpo class ``name`` and hpo's classes it derives from define (by class name)."""
    seen = seen if seen is not None else set()
    if name in seen or name not in classes:
        return set()
    seen.add(name)
    names: set[str] = set()
    for defined, bases in classes[name]:
        names |= defined
        for base in bases:
            names |= _inherited(base, classes, seen)
    return names


def foreign_private_uses(tree: ast.AST, classes: _Classes) -> Iterator[tuple[int, str]]:
    """(line, what) for each ``self._x`` / ``cls._x`` in a class of ``tree`` that neither it
    nor any hpo class it derives from defines."""
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        own = _inherited(cls.name, classes)
        for node in _own_nodes(cls):
            if isinstance(node, ast.Attribute) and _is_self(node.value) and _private_attribute(node.attr) \
                    and node.attr not in own:
                yield node.lineno, f"{cls.name}: {ast.unparse(node)}"


def test_hpo_classes_use_no_private_part_of_a_base_class_they_do_not_define():
    files = [p for p in sorted(HPO.rglob("*.py")) if p != BOUNDARY]
    trees = {path: ast.parse(path.read_text(), str(path)) for path in files}
    classes = hpo_classes([*trees.values(), ast.parse(BOUNDARY.read_text(), str(BOUNDARY))])
    offences = [f"{path.relative_to(HPO.parent)}:{line}: {what}"
                for path, tree in trees.items() for line, what in foreign_private_uses(tree, classes)]
    assert not offences, (
        "private attributes of another library's base class outside hpo/storage/optuna_internals.py "
        "(add a function there):\n" + "\n".join(offences)
    )


def test_the_class_checker_tells_own_from_inherited_private_parts():
    sample = (
        "class Base:\n"
        "    def __init__(self):\n"
        "        self._own = 1\n"
        "class Grid(optuna.samplers.GridSampler, Base):\n"
        "    _cached = None\n"
        "    def _helper(self):\n"
        "        return self._own, self._cached, cls._helper\n"
        "    def pick(self):\n"
        "        self._mine = 2\n"
        "        return self._rng.rng, self._mine\n"
    )
    tree = ast.parse(sample)
    assert list(foreign_private_uses(tree, hpo_classes([tree]))) == [(10, "Grid: self._rng")]
