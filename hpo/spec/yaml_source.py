"""Read a YAML 1.2 file into plain Python values plus the line of every key.

ruamel.yaml is used because it reads YAML 1.2 (``1e-3`` is a number, ``yes`` is a string)
and its round-trip loader remembers where each key and item came from, which is what
lets every spec error name its line. Nothing here executes code from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo.errors import SpecError

KeyPath = tuple[Any, ...]


@dataclass(frozen=True)
class YamlSource:
    """A parsed file: plain data, and the 1-based line of each key path in it."""

    file: str
    data: Any
    lines: dict[KeyPath, int]

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1


def read_yaml(path: str | Path) -> YamlSource:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{file}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{file}: cannot read the file ({exc})"]) from None
    try:
        document = YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        context = exc.context or ""
        if context and exc.context_mark and exc.context_mark.line + 1 != line:
            context += f" started on line {exc.context_mark.line + 1}"
        problem = ": ".join(str(p) for p in (context, exc.problem) if p)
        raise SpecError([f"{file}:{line}: YAML syntax error: {problem}"]) from None
    except YAMLError as exc:
        raise SpecError([f"{file}:1: YAML syntax error: {exc}"]) from None
    lines: dict[KeyPath, int] = {}
    return YamlSource(file, _plain(document, (), lines), lines)


def _plain(node: Any, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
    """Turn ruamel's commented containers and scalar subclasses into plain Python."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        result = {}
        for key, value in node.items():
            key = _scalar(key)
            lines[path + (key,)] = node.lc.key(key)[0] + 1 if key in node else 1
            result[key] = _plain(value, path + (key,), lines)
        return result
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            lines[path + (index,)] = node.lc.item(index)[0] + 1
            items.append(_plain(value, path + (index,), lines))
        return items
    return _scalar(node)


def _scalar(value: Any) -> Any:
    # ruamel returns subclasses (ScalarFloat, ScalarInt, ...) that keep formatting;
    # plain types keep JSON output and equality checks simple.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value
