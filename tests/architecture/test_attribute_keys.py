"""Every attribute key hpo stores is spelt once, in hpo/study/attrs.py; everything else names it.

Computed from the code with ``ast``. Outside hpo/study/attrs.py (docstrings aside) none of
these may be a string literal:

- a key read from something named ``user_attrs``/``system_attrs`` (``x.user_attrs["k"]``,
  ``.get("k")``, ``"k" in x.user_attrs``; the storage's ``get_*_user_attrs(...)`` too);
- the key given to ``set_user_attr``, ``set_trial_user_attr``, ``set_study_user_attr``,
  ``set_system_attr`` (and kin), or a key of a dict literal passed as ``user_attrs=``;
- any string equal to a declared key, or in the study keys' ``hpo:`` namespace, or starting
  like a templated key (``hpo:retrain:``), wherever it stands. A few words that are keys
  also mean something else in one place (``data`` is a config section too); those places
  are listed in ``NOT_KEYS``, each with why, and an entry that no longer matches fails.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import hpo.study.attrs as schema

HPO = Path(__file__).resolve().parents[2] / "hpo"
SCHEMA = HPO / "study" / "attrs.py"

ATTR_MAPS = {"user_attrs", "system_attrs"}
READERS = {"get", "pop", "setdefault"}
# setter name -> position of its key argument
SETTERS = {"set_user_attr": 0, "set_system_attr": 0,
           "set_trial_user_attr": 1, "set_study_user_attr": 1,
           "set_trial_system_attr": 1, "set_study_system_attr": 1}
STUDY_NAMESPACE = "hpo:"

# Strings equal to a key that mean something else where they stand: (place, value) -> why.
# A place is a package ("hpo/spec/": anywhere in it) or "file:scope", the scope being the
# innermost enclosing function or class (``<module>`` outside any): not a line, so that
# edits elsewhere do not move it.
_METRIC = "an objective metric name (hpo.spec.model.TRIAL_METRICS), which names the measurement alike"
NOT_KEYS: dict[tuple[str, str], str] = {
    ("hpo/spec/", "data"): "the data section of a spec or a trial's config",
    ("hpo/spec/", "peak_memory_mb"): _METRIC,
    ("hpo/spec/", "seconds_per_epoch"): _METRIC,
    ("hpo/spec/", "images_per_second"): _METRIC,
    ("hpo/training/", "data"): "the data section of a config",
    ("hpo/training/", "device"): "a field of the augmentation generator's checkpoint state",
    ("hpo/worker/trial.py:objective_values", "peak_memory_mb"): _METRIC,
    ("hpo/worker/trial.py:objective_values", "seconds_per_epoch"): _METRIC,
    ("hpo/worker/trial.py:objective_values", "images_per_second"): _METRIC,
    ("hpo/worker/pool.py:Slot.command", "worker"): "the `hpo worker` command a child runs",
    ("hpo/cli/worker.py:_gpu_ids", "device"): "the --device option's parameter name",
    ("hpo/cli/space.py:preview", "config"): "a key of `hpo space preview`'s output: a drawn config, no trial",
    ("hpo/results/retrain.py:retrain", "config"): "a key of the retrain's metrics.json",
    ("hpo/results/retrain.py:retrain", "device"): "a key of the retrain's metrics.json",
    ("hpo/results/retrain.py:retrain", "seed"): "TrainConfig.seed and a key of the retrain's per-seed runs",
    ("hpo/results/retrain.py:_test", "seed"): "a key of the retrain's per-seed runs",
    ("hpo/api/models.py:model_of_folder", "config"): "a key of the retrain's metrics.json, read back",
    ("hpo/api/models.py:model_of_folder", "seed"): "a key of the retrain's per-seed runs, read back",
}


def declared_keys() -> list[str]:
    return [*schema.TRIAL_KEYS, *schema.STUDY_KEYS]


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_attr_map(node: ast.AST) -> bool:
    """``x.user_attrs``, ``user_attrs``, or a call such as ``storage.get_study_user_attrs(i)``."""
    if isinstance(node, ast.Call):
        name = _name(node.func) or ""
        return name.startswith("get_") and name.endswith(tuple(ATTR_MAPS))
    return _name(node) in ATTR_MAPS


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _scopes(tree: ast.AST) -> dict[int, str]:
    """Node id -> qualified name of its innermost function or class (``<module>`` outside)."""
    scopes: dict[int, str] = {}

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = child.name if scope == "<module>" else f"{scope}.{child.name}"
            scopes[id(child)] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return scopes


def key_uses(tree: ast.AST) -> Iterator[ast.AST]:
    """The key expressions of every attribute read or write, literal or not."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_attr_map(node.value):
            yield node.slice
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(_is_attr_map(c) for c in node.comparators):
            yield node.left
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            if name in READERS and isinstance(node.func, ast.Attribute) and _is_attr_map(node.func.value) \
                    and node.args:
                yield node.args[0]
            elif name in SETTERS:
                position = SETTERS[name]
                if len(node.args) > position:
                    yield node.args[position]
                yield from (k.value for k in node.keywords if k.arg == "key")
            for keyword in node.keywords:
                if keyword.arg in ATTR_MAPS and isinstance(keyword.value, ast.Dict):
                    yield from (k for k in keyword.value.keys if k is not None)


def _is_literal(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(node, ast.JoinedStr)


def _looks_like_key(value: str, keys: set[str], prefixes: tuple[str, ...]) -> bool:
    return value in keys or value.startswith(prefixes)


def _excuse(relative: str, scope: str, value: str) -> tuple[str, str] | None:
    """The NOT_KEYS entry that covers ``value`` in ``scope`` of file ``relative``, if any."""
    for place, excused in NOT_KEYS:
        if excused == value and (place == f"{relative}:{scope}"
                                 or (place.endswith("/") and relative.startswith(place))):
            return place, value
    return None


def scan() -> tuple[list[str], Counter[str], Counter[tuple[str, str]]]:
    """(offenders as ``file:line: why``, attribute uses seen per file, NOT_KEYS matches)."""
    keys = set(declared_keys())
    prefixes = (STUDY_NAMESPACE, *(k.partition("{")[0] for k in keys if "{" in k))
    offenders: list[str] = []
    uses: Counter[str] = Counter()
    excused: Counter[tuple[str, str]] = Counter()
    for path in sorted(HPO.rglob("*.py")):
        if path == SCHEMA:
            continue
        relative = path.relative_to(HPO.parent).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        flagged: set[int] = set()
        for key in key_uses(tree):
            uses[relative] += 1
            if _is_literal(key):
                flagged.add(id(key))
                offenders.append(f"{relative}:{key.lineno}: attribute key {ast.unparse(key)} "
                                 "spelt out (name it from hpo.study.attrs)")
        docstrings, scopes = _docstrings(tree), _scopes(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if id(node) in docstrings or id(node) in flagged or not _looks_like_key(node.value, keys, prefixes):
                continue
            scope = scopes.get(id(node), "<module>")
            entry = _excuse(relative, scope, node.value)
            if entry is not None:
                excused[entry] += 1
                continue
            offenders.append(f"{relative}:{node.lineno}: {node.value!r} is an attribute key "
                             f"(in {scope}; name it from hpo.study.attrs, or add \"{relative}:{scope}\" "
                             "to NOT_KEYS if it means something else there)")
    return offenders, uses, excused


def test_no_attribute_key_is_spelt_outside_the_schema():
    offenders, uses, _ = scan()
    # Not a vacuous pass: the scan sees the attribute reads and writes it is meant to check
    # (the worker writes trial attributes, the study and the artifacts study attributes).
    assert sum(uses.values()) >= 10, f"only {dict(uses)} attribute uses found: does the scan still read the code?"
    assert {"hpo/worker/loop.py", "hpo/worker/recovery.py", "hpo/study/studies.py",
            "hpo/artifacts/store.py"} <= set(uses), dict(uses)
    assert not offenders, "\n".join(offenders)


def test_every_not_key_entry_still_matches():
    _, _, excused = scan()
    stale = [f"{place}: {value!r}" for place, value in NOT_KEYS if not excused[(place, value)]]
    assert not stale, "NOT_KEYS entries that match nothing any more:\n" + "\n".join(stale)


def test_the_scan_finds_a_spelt_out_key():
    tree = ast.parse('trial.set_user_attr("fail_reason", r)\n'
                     'x = t.user_attrs.get("config")\n'
                     'storage.set_trial_user_attr(1, "retried", True)\n'
                     'y = "curves" in t.user_attrs\n'
                     'write_to_trial(trial, user_attrs={"seed": 1})\n')
    found = sorted(ast.literal_eval(k) for k in key_uses(tree))
    assert found == ["config", "curves", "fail_reason", "retried", "seed"]


def test_the_scan_knows_a_key_wherever_it_stands():
    keys = set(declared_keys())
    prefixes = (STUDY_NAMESPACE, "hpo:retrain:")
    assert _looks_like_key("fail_reason", keys, prefixes)
    assert _looks_like_key("hpo:retrain:3", keys, prefixes) and _looks_like_key("hpo:new", keys, prefixes)
    assert not _looks_like_key("val_loss", keys, prefixes)
    assert _excuse("hpo/spec/space.py", "sample_config", "data") == ("hpo/spec/", "data")
    assert _excuse("hpo/worker/trial.py", "_result_attrs", "seconds_per_epoch") is None


def test_each_key_is_declared_once():
    tree = ast.parse(SCHEMA.read_text(), str(SCHEMA))
    declared: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    declared.setdefault(node.value.value, []).append(f"{target.id} (line {node.lineno})")
    twice = {value: names for value, names in declared.items() if len(names) > 1}
    assert not twice, f"key values declared more than once: {twice}"
    counts = Counter(declared_keys())
    assert not [k for k, n in counts.items() if n > 1], counts
    # Every declared constant is in TRIAL_KEYS or STUDY_KEYS (what the scan checks for).
    assert set(declared) == set(counts), set(declared) ^ set(counts)
    assert len(declared) >= 30


def test_the_schema_is_cheap_to_import():
    tree = ast.parse(SCHEMA.read_text(), str(SCHEMA))
    imported = set()
    for node in tree.body:  # module level; TYPE_CHECKING blocks are not run
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "collections", "dataclasses", "typing"}, imported
