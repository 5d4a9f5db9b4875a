"""Read a YAML 1.2 file into plain Python values plus the line of every key.

ruamel.yaml is used because it reads YAML 1.2 (``1e-3`` is a number, ``yes`` is a string),
but only its parser: the values are built here, event by event, from an explicit stack.
That is what keeps a hostile file harmless. Nothing is constructed from a tag (any tag
beyond YAML's own plain types is refused, so nothing can execute), nesting is limited
before anything recurses, and aliases are counted each time they are used, so that an
alias bomb stops at the limit instead of expanding a billion values. The file is read
only up to its size limit. JSON is YAML too, so ``.json`` specs come through here alike.

Every refusal is one ``FILE:LINE: key.path: message (got ...; expected ...)`` line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hpo.errors import SpecError
from hpo.spec.display import KeyPath, dotted, show

# A spec is a few KB; these leave room for thousands of class names or a large custom kwargs
# block. ruamel's pure-Python parser takes ~0.1 ms per value on a busy 2-core machine, so the
# worst file within them is read in about a second, in well under 100 MB.
MAX_SPEC_BYTES = 256 * 1024
MAX_DEPTH = 32  # levels of mappings and lists; a spec uses about six
MAX_VALUES = 10_000  # scalars, mappings and lists, aliased ones counted at each use

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
_EXPECTED_AS = {"int": "a whole number", "float": "a number", "bool": "true or false",
                "null": "null"}
_PLAIN_YAML = "expected plain YAML: mappings, lists, strings, numbers, true/false and null"


@dataclass(frozen=True)
class YamlSource:
    """A parsed file: plain data, and the 1-based line of each key path in it."""

    file: str
    data: Any
    lines: dict[KeyPath, int]
    # Values given on the command line (``--set KEY=VALUE``, hpo.spec.overrides): their key
    # path and the text as given. A problem under one names the option, not a line.
    overridden: tuple[tuple[KeyPath, str], ...] = ()

    def where(self, path: KeyPath) -> str:
        """``FILE:LINE``, or ``--set KEY=VALUE`` for a value given on the command line."""
        path = tuple(path)
        for at, text in reversed(self.overridden):  # the last --set of a key is the one used
            if path[:len(at)] == at:
                return f"--set {text}"
        return f"{self.file}:{self.line_of(path)}"

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1


def read_yaml(path: str | Path) -> YamlSource:
    file = str(path)
    text = _decode(file, _read_capped(file))
    lines: dict[KeyPath, int] = {}
    data = _Builder(file, lines).build(text)
    return YamlSource(file, data, lines)


def read_yaml_value(text: str, label: str) -> Any:
    """One value written as YAML (``1e-3``, ``[16, 32]``, ``{low: 1, high: 4}``, ``null``), read
    under the rules of a spec file; a problem is one ``LABEL: ...`` line."""
    try:
        return _Builder(label, {}).build(text, allow_empty=True)
    except SpecError as exc:
        # A value has no lines and no key path of its own: the label says which it is.
        raise SpecError([line.replace(f"{label}:1: ", f"{label}: ", 1).replace(": (top level): ", ": ", 1)
                         for line in exc.problems]) from None


def _read_capped(file: str) -> bytes:
    """The file's bytes, reading at most one byte past the limit (never a whole huge file)."""
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([f"{file}: no such file"]) from None
    except IsADirectoryError:
        raise SpecError([f"{file}: is a directory (expected a YAML spec file)"]) from None
    except OSError as exc:
        raise SpecError([f"{file}: cannot read the file ({exc.strerror or exc})"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError([f"{file}: the file is larger than a spec may be (got more than {MAX_SPEC_BYTES} "
                         f"bytes; expected at most {MAX_SPEC_BYTES} bytes)"])
    return data


def _decode(file: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SpecError([f"{file}:{line}: not UTF-8 text (got byte 0x{data[exc.start]:02x}; "
                         "expected a UTF-8 encoded YAML file)"]) from None


_NO_KEY: Any = object()


@dataclass
class _Open:
    """A mapping or list being filled, with what its anchor needs once it is closed."""

    value: dict[Any, Any] | list[Any]
    path: KeyPath
    anchor: str | None
    size: int = 1  # values inside, itself included, aliases expanded
    height: int = 1  # levels of mappings and lists, itself included
    key: Any = _NO_KEY  # a mapping's key waiting for its value
    key_lines: dict[Any, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Anchored:
    value: Any
    size: int
    height: int


class _Builder:
    """Plain values from ruamel's parser events, with every limit checked as it goes."""

    def __init__(self, file: str, lines: dict[KeyPath, int]):
        self.file, self.lines = file, lines
        self.stack: list[_Open] = []
        self.anchors: dict[str, _Anchored] = {}
        self.values = 0
        self.root: Any = _NO_KEY

    def build(self, text: str, *, allow_empty: bool = False) -> Any:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import MarkedYAMLError, YAMLError
        from ruamel.yaml.reader import ReaderError

        yaml = YAML(typ="safe", pure=True)
        self.resolver, self.constructor = yaml.resolver, yaml.constructor
        try:
            for event in yaml.parse(text):
                self._event(event)
        except MarkedYAMLError as exc:
            raise SpecError([self._syntax_error(exc)]) from None
        except ReaderError as exc:
            line = text[:exc.position].count("\n") + 1
            what = f"unacceptable character #x{exc.character:04x}" if isinstance(exc.character, int) else "bad input"
            raise SpecError([f"{self.file}:{line}: YAML syntax error: {what} ({exc.reason})"]) from None
        except YAMLError as exc:
            raise SpecError([f"{self.file}:1: YAML syntax error: {_one_line(str(exc))}"]) from None
        if allow_empty and self.root in (_NO_KEY, None):  # a value: empty is null, as in YAML
            return None
        if self.root is _NO_KEY or self.root is None:  # nothing, comments, or an empty document
            raise SpecError([f"{self.file}:1: the file is empty (expected a mapping with name, model, ...)"])
        return self.root

    def _syntax_error(self, exc: Any) -> str:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        context = exc.context or ""
        if context and exc.context_mark and exc.context_mark.line + 1 != line:
            context += f" started on line {exc.context_mark.line + 1}"
        problem = ": ".join(str(p) for p in (context, exc.problem) if p)
        return f"{self.file}:{line}: YAML syntax error: {_one_line(problem)}"

    # ------------------------------------------------------------------ events

    def _event(self, event: Any) -> None:
        from ruamel.yaml import events

        line = event.start_mark.line + 1
        if isinstance(event, events.DocumentStartEvent) and self.root is not _NO_KEY:
            self._refuse(line, None, "a second YAML document (expected one document per spec)")
        elif isinstance(event, events.ScalarEvent):
            self._add(self._scalar(event, line), 1, 0, line, event.anchor)
        elif isinstance(event, events.AliasEvent):
            self._alias(event.anchor, line)
        elif isinstance(event, events.MappingStartEvent | events.SequenceStartEvent):
            self._open(event, line)
        elif isinstance(event, events.MappingEndEvent | events.SequenceEndEvent):
            closed = self.stack.pop()
            if closed.anchor is not None:
                self.anchors[closed.anchor] = _Anchored(closed.value, closed.size, closed.height)
            self._place(closed.value, closed.size, closed.height, line, counted=True)

    def _open(self, event: Any, line: int) -> None:
        from ruamel.yaml import events

        mapping = isinstance(event, events.MappingStartEvent)
        path = self._child_path(line, "a list or mapping; expected a name")
        self._check_tag(event.tag, _CORE + ("map" if mapping else "seq"), path, line)
        if len(self.stack) + 1 > MAX_DEPTH:
            self._refuse(line, path, f"nested too deep (got more than {MAX_DEPTH} levels of mappings and lists; "
                         f"expected at most {MAX_DEPTH})")
        self._count(1, line)
        if self.stack and isinstance(self.stack[-1].value, list):
            self.lines[path] = line
        self.stack.append(_Open({} if mapping else [], path, event.anchor))

    def _alias(self, name: str, line: int) -> None:
        path = self._child_path(line, None)
        anchored = self.anchors.get(name)
        if anchored is None:
            self._refuse(line, path, f"undefined alias *{name} (expected an anchor &{name} defined above it)")
        if len(self.stack) + anchored.height > MAX_DEPTH:
            self._refuse(line, path, f"nested too deep (got more than {MAX_DEPTH} levels of mappings and lists; "
                         f"expected at most {MAX_DEPTH})")
        # Within the limits, so copying is cheap; a copy keeps each use its own value.
        self._add(copy.deepcopy(anchored.value), anchored.size, anchored.height, line, None)

    def _add(self, value: Any, size: int, height: int, line: int, anchor: str | None) -> None:
        self._count(size, line)
        if anchor is not None:
            self.anchors[anchor] = _Anchored(value, size, height)
        self._place(value, size, height, line, counted=False)

    def _place(self, value: Any, size: int, height: int, line: int, *, counted: bool) -> None:
        """Put a finished value where it belongs: the root, a list item, a key or a value."""
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        top.height = max(top.height, height + 1)
        if isinstance(top.value, list):
            self.lines.setdefault(top.path + (len(top.value),), line)
            top.value.append(value)
        elif top.key is _NO_KEY:
            self._key(top, value, line)
        else:
            top.value[top.key] = value
            top.key = _NO_KEY

    def _key(self, top: _Open, key: Any, line: int) -> None:
        if key is _MERGE:
            self._refuse(line, top.path, "merge keys (<<) are not supported (expected the keys written out)")
        if not isinstance(key, str):
            self._refuse(line, top.path, f"a key must be a string (got {show(key)}; expected a name, quoted if it "
                         "looks like a number)")
        if key in top.key_lines:
            self._refuse(line, top.path + (key,), f"duplicate key (first given on line {top.key_lines[key]})")
        top.key_lines[key] = line
        self.lines[top.path + (key,)] = line
        top.key = key

    def _child_path(self, line: int, not_a_key: str | None) -> KeyPath:
        """The key path of the value the next event starts; ``not_a_key``: the complaint when
        a mapping expects a key there (None: any value may be a key)."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return top.path + (len(top.value),)
        if top.key is _NO_KEY:
            if not_a_key is not None:
                self._refuse(line, top.path, f"a key must be a string (got {not_a_key})")
            return top.path
        return top.path + (top.key,)

    def _count(self, size: int, line: int) -> None:
        self.values += size
        if self.values > MAX_VALUES:
            where = self.stack[-1].path if self.stack else ()
            self._refuse(line, where, f"too many values (got more than {MAX_VALUES}, aliases counted each time "
                         f"they are used; expected at most {MAX_VALUES})")

    # ------------------------------------------------------------------ scalars and tags

    def _scalar(self, event: Any, line: int) -> Any:
        from ruamel.yaml.nodes import ScalarNode

        path = self._child_path(line, None)
        tag, value = event.tag, event.value
        if tag == "!":  # the non-specific tag: a string, whatever it looks like
            return value
        implicit = str(self.resolver.resolve(ScalarNode, value, event.implicit if tag is None else (True, False)))
        if tag is None:
            tag = implicit
            if tag == _CORE + "merge" and self.stack and not isinstance(self.stack[-1].value, list) \
                    and self.stack[-1].key is _NO_KEY:
                return _MERGE
        else:
            self._check_tag(tag, None, path, line)
            if tag != _CORE + "str" and implicit != tag and (tag, implicit) != (_CORE + "float", _CORE + "int"):
                self._not_valid(tag, value, path, line)
        kind = tag.removeprefix(_CORE)
        if kind not in _EXPECTED_AS:
            return value  # a string; YAML's timestamps stay strings too
        node = ScalarNode(tag, value, event.start_mark, event.end_mark)
        try:
            # kind is one of _EXPECTED_AS's few names (checked just above), never a user's word.
            return getattr(self.constructor, f"construct_yaml_{kind}")(node)
        except ValueError:  # an integer past Python's limit on digits
            self._not_valid(tag, value, path, line, " of at most 4300 digits")

    def _not_valid(self, tag: str, value: str, path: KeyPath, line: int, limit: str = "") -> NoReturn:
        kind = tag.removeprefix(_CORE)
        self._refuse(line, path, f"not a valid !!{kind} (got {show(value)}; expected {_EXPECTED_AS[kind]}{limit})")

    def _check_tag(self, tag: str | None, allowed: str | None, path: KeyPath, line: int) -> None:
        """Only YAML's own plain types may be named: ``!!python/...``, ``!!binary``, ``!!set``
        and local tags would ask for objects a spec never holds."""
        if tag is None or tag == "!" or tag == allowed or (allowed is None and tag in _SCALAR_TAGS):
            return
        shown = "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag
        self._refuse(line, path, f"tag {shown} is not allowed ({_PLAIN_YAML})")

    def _refuse(self, line: int, path: KeyPath | None, message: str) -> NoReturn:
        where = "" if path is None else f"{dotted(path) or '(top level)'}: "
        raise SpecError([f"{self.file}:{line}: {where}{message}"])


class _Merge:
    """The ``<<`` merge key, which is refused: aliases are the one way to reuse a value."""


_MERGE: Any = _Merge()


def _one_line(text: str) -> str:
    return " ".join(text.split())
