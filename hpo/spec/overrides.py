"""``--set KEY=VALUE``: spec values given on the command line, applied to the file's values
before validation, so that an override is checked exactly like the file (and a problem with
one names ``--set KEY=VALUE`` instead of a line).

KEY is a dotted path (``train.lr``, ``budget.n_trials``, ``model.filters``). Under ``search``
the parameter's own name has dots too: ``search.train.lr.high`` sets ``high`` of the searched
``train.lr`` when the spec searches it (the longest searched name that fits wins), and
``search.train.momentum`` (a name the spec does not search yet) adds that whole parameter.
VALUE is YAML, read under the spec file's rules: ``1e-3`` is a number, ``[16, 32]`` a list,
``{low: 1, high: 4}`` a mapping, ``null`` clears a value.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from hpo.errors import SpecError
from hpo.spec.display import KeyPath, dotted, show
from hpo.spec.yaml_source import YamlSource, read_yaml_value

# What a caller may pass: ``["train.lr=0.01", ...]`` (the command line) or, from Python,
# ``{"train.lr": 0.01}`` (values already Python values), or one ``"train.lr=0.01"``.
Overrides = str | Iterable[str] | Mapping[str, Any]

_FORM = "expected KEY=VALUE with a dotted KEY, such as train.lr=0.01 or budget.n_trials=20"


def parse_overrides(overrides: Overrides) -> list[tuple[str, str, Any]]:
    """(text as given, dotted key, value) of each override, in order."""
    if isinstance(overrides, Mapping):
        return [(f"{key}={show(value)}", _checked_key(str(key), f"{key}={show(value)}"), value)
                for key, value in overrides.items()]
    # A str is an Iterable[str] too, of its characters: one string is one override.
    texts = [overrides] if isinstance(overrides, str) else list(overrides)
    parsed = []
    for text in texts:
        if not isinstance(text, str):
            raise SpecError([f"--set {text!r}: an override is a string KEY=VALUE, not a {type(text).__name__} "
                             f"({_FORM}; or a mapping {{KEY: value}})"])
        key, equals, value = text.partition("=")
        if not equals:
            raise SpecError([f"--set {text}: no '=' ({_FORM})"])
        label = f"--set {text}"
        parsed.append((text, _checked_key(key.strip(), text), read_yaml_value(value, label)))
    return parsed


def _checked_key(key: str, text: str) -> str:
    if not key or any(not part for part in key.split(".")):
        raise SpecError([f"--set {text}: {'no key' if not key else 'an empty part in ' + repr(key)} ({_FORM})"])
    return key


def apply_overrides(source: YamlSource, overrides: Overrides) -> YamlSource:
    """``source`` with each override's value put at its key path (creating mappings on the
    way), and the override recorded so that problems under it name it."""
    parsed = parse_overrides(overrides)
    if not parsed:
        return source
    data = copy.deepcopy(source.data)
    if not isinstance(data, dict):  # the validator reports the file's top level itself
        return source
    overridden = list(source.overridden)
    for text, key, value in parsed:
        path = key_path(data, key)
        _put(data, path, value, text)
        overridden.append((path, text))
    return replace(source, data=data, overridden=tuple(overridden))


def key_path(data: dict[str, Any], key: str) -> KeyPath:
    """The key path of a dotted ``key``; under ``search`` the parameter name keeps its dots."""
    section, _, rest = key.partition(".")
    if section != "search" or not rest:
        return tuple(key.split("."))
    searched = data.get("search")
    names = [name for name in searched if isinstance(name, str)] if isinstance(searched, dict) else []
    fitting = [name for name in names if rest == name or rest.startswith(name + ".")]
    if not fitting:
        return ("search", rest)  # a new searched parameter, given whole
    name = max(fitting, key=len)
    return ("search", name, *rest[len(name) + 1:].split(".")) if rest != name else ("search", name)


def _put(data: dict[str, Any], path: KeyPath, value: Any, text: str) -> None:
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}  # a section or mapping not written in the file (or null)
        elif not isinstance(child, dict):
            at = dotted(path[:depth + 1])
            raise SpecError([f"--set {text}: {at} is {show(child)}, not a mapping, so it has no key "
                             f"{path[depth + 1]!r} (expected a key path that ends at a value)"])
        node = child
    node[path[-1]] = value
