"""Spec problems: collected, then printed as ``FILE:LINE: key.path: message (got V; expected E)``.

Pydantic finds most problems; this module turns its error records into that one-line form.
Pydantic's own messages name union members and internal locations (``int``,
``list[int]``, ``function-after[...]``) that mean nothing to someone editing YAML, so
those are folded away here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hpo.errors import close_matches
from hpo.spec.display import KeyPath, dotted, show
from hpo.spec.yaml_source import YamlSource

_UNSET: Any = object()


@dataclass
class Problem:
    path: KeyPath
    message: str
    got: Any = _UNSET
    expected: list[str] = field(default_factory=list)

    def format(self, source: YamlSource | None) -> str:
        where = f"{source.where(self.path)}: " if source else ""
        text = f"{where}{dotted(self.path) or '(top level)'}: {self.message}"
        details = []
        if self.got is not _UNSET and not (isinstance(self.got, str) and show(self.got) in self.message):
            details.append(f"got {show(self.got)}")
        if self.expected:
            details.append("expected " + " or ".join(dict.fromkeys(self.expected)))
        return text + (f" ({'; '.join(details)})" if details else "")


def did_you_mean(word: Any, known: list[str]) -> list[str]:
    """``["'adam' (did you mean?)", "one of: adam, sgd"]``-style expected phrases."""
    phrases = []
    matches = close_matches(str(word), known)
    if matches:
        phrases.append(" or ".join(repr(m) for m in matches) + " (close match)")
    if known:
        phrases.append("one of: " + ", ".join(known))
    return ["; ".join(phrases)] if phrases else []


_TYPE_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def from_validation_error(
    error: ValidationError, raw: Any, prefix: KeyPath, model: type[BaseModel]
) -> list[Problem]:
    """One problem per offending key, folding union alternatives into one line."""
    merged: dict[KeyPath, Problem] = {}
    for record in error.errors():
        loc = _user_loc(record["loc"], raw, record["type"] == "missing")
        problem = _convert(record, raw, loc, model)
        problem.path = prefix + loc
        merged[problem.path] = _merge(merged.get(problem.path), problem)
    # A list's item out of range also fails ``int | list[int]``'s int: that "wrong type" too.
    def inside(p: Problem, q: Problem) -> bool:
        return q.path[:len(p.path)] == p.path != q.path

    found = list(merged.values())
    return [p for p in found if not (p.message == "wrong type" and any(inside(p, q) for q in found))]


def _merge(earlier: Problem | None, later: Problem) -> Problem:
    """Union alternatives of one key as one problem. When the value has the type of one
    alternative and breaks its rule (a seed of 2**32 for ``int | None``), the other
    alternatives' "wrong type" would only mislead, so that rule alone is reported."""
    if earlier is None or (earlier.message == "wrong type" and later.message != "wrong type"):
        return later
    if later.message == "wrong type" and earlier.message != "wrong type":
        return earlier
    earlier.expected.extend(later.expected)
    return earlier


def _user_loc(loc: tuple[Any, ...], raw: Any, missing: bool) -> KeyPath:
    """Keep only the parts of pydantic's location that are keys or indexes in the YAML."""
    kept: list[Any] = []
    node = raw
    for index, part in enumerate(loc):
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if isinstance(node, dict) and part in node or in_list:
            kept.append(part)
            node = node[part]
        elif missing and index == len(loc) - 1 and isinstance(part, str):
            kept.append(part)
    return tuple(kept)


def _convert(record: ErrorDetails, raw: Any, loc: KeyPath, model: type[BaseModel]) -> Problem:
    kind, ctx = record["type"], record.get("ctx") or {}
    got = record.get("input", _UNSET)
    if kind == "missing":
        return Problem(loc, "required key is missing")
    if kind == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1])
        return Problem(loc, "unknown key", loc[-1], did_you_mean(loc[-1], allowed))
    if kind in _TYPE_EXPECTED:
        return Problem(loc, "wrong type", got, [_TYPE_EXPECTED[kind]])
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return Problem(loc, "out of range", got, [f"a value {_BOUNDS[kind]} {bound}"])
    if kind == "finite_number":
        return Problem(loc, "not a finite number", got, ["a finite number" + _bounds_of(model, loc)])
    if kind == "literal_error":
        known = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return Problem(loc, "unknown value", got, did_you_mean(got, known))
    if kind == "string_pattern_mismatch":
        return Problem(loc, "invalid name", got,
                       ["letters, digits, '.', '_' or '-', starting with a letter or digit, at most 100 characters"])
    if kind == "value_error":
        message = str(ctx.get("error", record["msg"]))
        return Problem(loc, message, got if not isinstance(got, dict) else _UNSET)
    return Problem(loc, record["msg"][0].lower() + record["msg"][1:], got)


def _bounds_of(model: type[BaseModel], loc: KeyPath) -> str:
    """`` > 0 and <= 3600``: the declared bounds of the field at ``loc``, where it is one."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        current = nested_model(current, part) if current and isinstance(part, str) else None
    info = current.model_fields.get(loc[-1]) if current and loc and isinstance(loc[-1], str) else None
    rules = [(op, getattr(rule, name)) for rule in (info.metadata if info else [])
             for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if hasattr(rule, name)]
    return (" " + " and ".join(f"{op} {value:g}" for op, value in rules)) if rules else ""


def allowed_keys(model: type[BaseModel], path: KeyPath) -> list[str]:
    """Field names of the (nested) pydantic model at ``path`` below ``model``."""
    current: Any = model
    for part in path:
        nested = nested_model(current, part) if isinstance(part, str) else None
        if nested is None:
            return []
        current = nested
    return sorted(current.model_fields)


def nested_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The pydantic model type of field ``name``, unwrapping ``X | None``."""
    import typing

    info = model.model_fields.get(name)
    if info is None:
        return None
    for candidate in (info.annotation, *typing.get_args(info.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
