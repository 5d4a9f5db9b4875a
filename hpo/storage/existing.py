"""What a storage holds before hpo opens it: a journal file is checked to be one, and a
reading command creates nothing (no journal file, no SQLite file, no Optuna tables).

Optuna would create a missing journal file, append its records to any file it is given (a
spec, a PNG), and create its 13 tables (and stamp alembic's version) in any database it
opens; ``JSONDecodeError: Expecting value`` is all it says about a file that is no journal.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import StorageError, UsageError, close_matches

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

# Every record Optuna's journal writes carries these; the first one creates a study and is
# short, so a first line longer than this is not a journal's.
RECORD_KEYS = ("op_code", "worker_id")
FIRST_LINE_LIMIT = 1 << 20
_RECORD_START = b'{"op_code":'  # how Optuna writes a record (compact separators, op_code first)
_LISTED_NEIGHBOURS = 2000  # for "did you mean": enough for any real folder, bounded for huge ones


def empty_storage() -> BaseStorage:
    """What a reader sees where nothing has been stored yet: no studies, nothing created."""
    import optuna

    return optuna.storages.InMemoryStorage()


def open_journal(path: Path, *, read_only: bool, is_default: bool) -> BaseStorage:
    """Optuna's JournalStorage on ``path``, once it is known to be a journal (or, for a
    writer, to be new). A reader given a missing file by name is told so; the default file,
    not there yet, reads as an empty storage."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if path.is_dir():
        raise UsageError(f"storage {path} is a directory, not a journal file")
    if path.exists():
        check_journal_head(path)
    elif read_only:
        if is_default:
            return empty_storage()
        raise UsageError(missing_file_message(path))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    # Optuna's default lock, because optuna-dashboard opens the file with it too:
    # writers holding different kinds of lock would not exclude each other.
    backend = JournalFileBackend(str(path))
    try:
        return optuna.storages.JournalStorage(backend)  # replays every record
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(damaged_journal_message(path, exc)) from None


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return False
    return isinstance(record, dict) and all(key in record for key in RECORD_KEYS)


def check_journal_head(path: Path) -> None:
    """An existing ``path`` starts like an Optuna journal: empty (Optuna starts journals as
    empty files), or a first line that is a journal record (or the start of one being
    written). Reads at most ``FIRST_LINE_LIMIT`` bytes, however big the file."""
    with path.open("rb") as f:
        head = f.read(FIRST_LINE_LIMIT)
    if not head:
        return
    first, newline, _ = head.partition(b"\n")
    if _is_record(first) or (not newline and head.startswith(_RECORD_START)):
        return
    raise UsageError(
        f"storage {path} is not an Optuna journal file (its first line is not a journal "
        "record): give the journal file 'hpo study create' wrote, or a postgresql:// URL"
    )


def missing_file_message(path: Path) -> str:
    """``storage file X does not exist; did you mean Y?``: a reader never creates it."""
    message = f"storage file {path} does not exist"
    matches = close_matches(path.name, _neighbours(path.parent))
    if matches:
        message += "; did you mean " + " or ".join(str(path.parent / m) for m in matches) + "?"
    return message + " ('hpo study create' creates it; reading commands never do)"


def _neighbours(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in itertools.islice(entries, _LISTED_NEIGHBOURS) if e.is_file()]
    except OSError:  # the folder is missing too, or unreadable: nothing to suggest
        return []


def damaged_journal_message(path: Path, exc: Exception) -> str:
    """Which line of ``path`` Optuna could not replay, found by reading the file again (only
    on this error path); a last line without its newline is one still being written."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if line.endswith(b"\n") and not _is_record(line):
                return (f"journal file {path} is damaged: line {number} is not a journal record "
                        "(the lines before it are intact; restore the file from a copy)")
    return f"journal file {path} cannot be replayed: {type(exc).__name__}: {exc}"


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL; None for an in-memory database."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database).expanduser() if database and database != ":memory:" else None


def has_optuna_tables(url: str, engine_kwargs: dict[str, Any]) -> bool:
    """Whether the database holds Optuna's schema, asked without creating anything (the
    connection is closed again: a reader opening Optuna's storage then makes its own)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()
