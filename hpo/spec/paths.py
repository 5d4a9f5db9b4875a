"""What a dotted path such as ``train.lr`` or ``model.filters`` means in a spec.

``search`` keys, ``when`` conditions and ``repeat`` counts all name config paths; this
module answers whether a path exists, what value it has when fixed, and whether a
candidate value is acceptable, by asking the same pydantic models that validate the
fixed config (so a searched value is held to exactly the rules a fixed one is).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from hpo.spec.problems import from_validation_error, nested_model

SECTIONS = ("data", "model", "train")


class ConfigPaths:
    def __init__(self, raw_spec: dict[str, Any], model_families: list[str]):
        from hpo.models.registry import MODELS
        from hpo.training.config import DataConfig, TrainConfig

        def section(name: str) -> dict[str, Any]:
            value = raw_spec.get(name)
            return value if isinstance(value, dict) else {}

        self._raw = {name: section(name) for name in SECTIONS}
        self._classes: dict[str, list[tuple[type[BaseModel], dict[str, Any]]]] = {
            "data": [(DataConfig, self._raw["data"])],
            "train": [(TrainConfig, self._raw["train"])],
            "model": [
                (MODELS.get(family).config, {**self._raw["model"], "name": family})
                for family in model_families
            ],
        }

    def _split(self, path: str) -> tuple[str, list[str]]:
        section, _, rest = path.partition(".")
        return section, rest.split(".") if rest else []

    def _owners(self, path: str) -> list[tuple[type[BaseModel], dict[str, Any]]]:
        """The (config class, fixed values) pairs in which ``path`` is a field."""
        section, parts = self._split(path)
        owners = []
        for cls, raw in self._classes.get(section, []):
            current: type[BaseModel] | None = cls
            for part in parts[:-1]:
                current = nested_model(current, part) if current else None
            if parts and current is not None and parts[-1] in current.model_fields:
                owners.append((cls, raw))
        return owners

    def exists(self, path: str) -> bool:
        return bool(self._owners(path))

    def known(self) -> list[str]:
        """Every settable path, for close-match suggestions."""
        paths = set()
        for section, classes in self._classes.items():
            for cls, _ in classes:
                for name in cls.model_fields:
                    paths.add(f"{section}.{name}")
                    sub = nested_model(cls, name)
                    paths.update(f"{section}.{name}.{n}" for n in (sub.model_fields if sub else ()))
        return sorted(paths)

    def field_annotation(self, path: str) -> Any:
        section, parts = self._split(path)
        cls, _ = self._owners(path)[0]
        for part in parts[:-1]:
            cls = nested_model(cls, part)  # type: ignore[assignment]
        return cls.model_fields[parts[-1]].annotation

    def accepts_list(self, path: str) -> bool:
        annotation = self.field_annotation(path)
        options = typing.get_args(annotation) or (annotation,)
        return any(typing.get_origin(o) is list for o in options)

    def fixed_value(self, path: str) -> Any:
        """The value a path has when it is not searched: written in the spec, or the default."""
        section, parts = self._split(path)
        node: Any = self._raw[section]
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
        cls, _ = self._owners(path)[0]
        for part in parts[:-1]:
            cls = nested_model(cls, part)  # type: ignore[assignment]
        return cls.model_fields[parts[-1]].get_default(call_default_factory=True)

    def sampled_value(self, path: str) -> Any:
        """``fixed_value`` as a trial's config holds it, defaults filled in (a fixed
        ``augment: [hflip]`` is ``[{name: hflip, p: 0.5}]``): what sampling checks ``when``
        conditions against (hpo.spec.space.fixed_config). ``fixed_value`` itself where the
        section does not validate (its own problems are reported elsewhere)."""
        section, parts = self._split(path)
        owners = self._owners(path)
        if not owners:
            return self.fixed_value(path)
        cls, raw = owners[0]
        try:
            node: Any = cls.model_validate(raw).model_dump(mode="json")
        except ValidationError:
            return self.fixed_value(path)
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def check(self, path: str, value: Any, also: dict[str, Any] | None = None) -> tuple[str, list[str]] | None:
        """(why, what is expected) when ``value`` is not acceptable at ``path``, else None.
        ``also``: other paths' values at the same time (those of other sections do not matter)."""
        section, parts = self._split(path)
        reasons: list[tuple[str, list[str]]] = []
        for cls, raw in self._owners(path):
            candidate = _with_value(raw, parts, value)
            for other, other_value in (also or {}).items():
                other_section, other_parts = self._split(other)
                if other_section == section and other_parts:
                    candidate = _with_value(candidate, other_parts, other_value)
            try:
                cls.model_validate(candidate, strict=True)
                return None
            except ValidationError as exc:
                problems = from_validation_error(exc, candidate, (), cls)
                mine = [p for p in problems if list(p.path[: len(parts)]) == parts]
                if not mine:
                    return None
                reasons.append((mine[0].message, mine[0].expected))
        return reasons[0] if reasons else None


def _with_value(raw: dict[str, Any], parts: list[str], value: Any) -> dict[str, Any]:
    result = dict(raw)
    node = result
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[parts[-1]] = value
    return result
