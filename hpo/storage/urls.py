"""Storage URL -> Optuna storage: the embedded journal file by default, PostgreSQL for many
machines (passwords are kept out of every output by ``hpo.storage.secrets``).

The embedded default is Optuna's JournalStorage on a local file: unlike SQLite it takes
concurrent writers from many processes without "database is locked" errors, and it
needs no server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoError, StorageError, UsageError
from hpo.storage.secrets import redact, remember_password, scrub
from hpo.storage.url_checks import check_rdb_url, check_url

if TYPE_CHECKING:  # hpo --help imports this module: no optuna at run time
    from optuna.storages import BaseStorage

ENV_VAR = "HPO_STORAGE"
DEFAULT_FILE = "hpo-studies.journal"
RDB_SCHEMES = ("postgresql", "sqlite", "mysql")
# How long a worker waits for an unreachable database (hpo worker --reconnect-timeout): a
# PostgreSQL restart takes seconds, a failover or a maintenance window minutes. Past this
# the worker exits with an error rather than hang unnoticed.
DEFAULT_RECONNECT_TIMEOUT = 300.0

# PostgreSQL's default limit is 100 connections: keep each worker to a couple, check a
# pooled connection before use (servers restart), and fail fast on an unreachable host.
# Two are kept open: a worker's main thread and its heartbeat thread each use one. With one
# kept and one more allowed, the second was opened and closed whenever both threads used the
# database at once: a TCP connection and a SCRAM login each time, which through PgBouncer
# all land on its one thread.
# A third is opened (and closed) only if three threads of a process use the database at once.
POSTGRES_ENGINE_KWARGS: dict[str, Any] = {
    "pool_size": 2,
    "max_overflow": 1,
    "pool_pre_ping": True,
    "pool_recycle": 1800,
    "connect_args": {"connect_timeout": 10},
}
# psycopg 3 (SQLAlchemy 2.1's driver for postgresql:// URLs) prepares a statement on the
# server once it has run 5 times on one connection. Behind a pooler in transaction mode
# (PgBouncer, as README advises past about 45 workers; Debian's 1.18 cannot track prepared
# statements) the next transaction may run on another server connection, which already has
# "_pg3_0" or lacks it: DuplicatePreparedStatement, and every worker dies. A worker cannot
# tell a pooler from a server (both are a host and a port), so preparing is off on every
# psycopg 3 connection: Optuna's statements are short and cheap to plan. On plain
# PostgreSQL, hpo's worker (benchmarks/trial_overhead.py's hpo side, 5 alternating turns of
# 20 trials at ~100 finished) took 63-76 ms per trial without preparing against 62-69 ms
# with it, within the 57-87 ms the turns spread over. psycopg2 never prepares.
PSYCOPG3_CONNECT_ARGS: dict[str, Any] = {"prepare_threshold": None}


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for a database URL: PostgreSQL's pool limits, and for its
    psycopg 3 driver no server-side prepared statements (see above)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return {}
    if parsed.get_driver_name() != "psycopg":
        return POSTGRES_ENGINE_KWARGS
    return {**POSTGRES_ENGINE_KWARGS,
            "connect_args": {**POSTGRES_ENGINE_KWARGS["connect_args"], **PSYCOPG3_CONNECT_ARGS}}


@dataclass(frozen=True)
class StorageTarget:
    # As given, password included: never print this; left out of the repr (which then shows
    # ``display``), so a target in a log line, debugger or test failure shows no password.
    url: str = field(repr=False)
    display: str  # safe to print and store
    kind: str  # "journal" or "rdb"
    is_default: bool = False


def resolve_storage(option: str | None) -> StorageTarget:
    """``--storage``, else ``$HPO_STORAGE``, else the journal file in the current directory."""
    url = option or os.environ.get(ENV_VAR) or ""
    if not url:
        path = Path.cwd() / DEFAULT_FILE
        return StorageTarget(str(path), str(path), "journal", is_default=True)
    if "://" not in url:
        return StorageTarget(url, url, "journal")
    remember_password(url)  # first: whatever goes wrong next is scrubbed of it
    check_url(url)
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in RDB_SCHEMES:
        raise UsageError(
            f"unsupported storage URL scheme {scheme!r} in {redact(url)} (expected "
            "postgresql://USER:PASSWORD@HOST:5432/DB, sqlite:///FILE, or a file path for "
            "the embedded journal store)"
        )
    check_rdb_url(url, scheme)
    return StorageTarget(url, redact(url), "rdb")


def open_storage(target: StorageTarget, *, reconnect_for: float | None = None,
                 read_only: bool = False) -> BaseStorage:
    """The Optuna storage object for ``target``; errors never show the password.

    ``reconnect_for``: on a database, wait up to this many seconds (with backoff) for it to
    come back whenever a call cannot reach it, instead of failing at once (workers do this;
    commands a user types fail fast).

    ``read_only``: create nothing, for every command that needs an existing study or only
    reads: no journal or SQLite file (one named but missing is an error naming it; the
    default journal, not there yet, is an empty storage), no Optuna tables (a database
    without them is an empty storage). What exists can still be written to (the worker
    loads its study this way)."""
    from hpo.storage.existing import open_journal

    try:
        if target.kind == "journal":
            return open_journal(Path(target.url).expanduser(), read_only=read_only,
                                is_default=target.is_default)
        options = engine_kwargs(target.url)
        if not reconnect_for:
            return _open_rdb(target, options, read_only=read_only)
        from hpo.storage.optuna_internals import OneTripTrialCreation, cached_storage
        from hpo.storage.proxies import OneReadPerTrial, ReconnectingStorage

        if "pool_pre_ping" in options:
            # The reconnecting layer retries a call that meets a dead connection (SQLAlchemy
            # then replaces the pool's connections), so the ping before every transaction, a
            # round trip and through PgBouncer a server connection of its own, is not needed.
            options = {**options, "pool_pre_ping": False}
        opened = _open_rdb(target, options, read_only=read_only)
        if not isinstance(opened, OneTripTrialCreation):  # read_only, and no Optuna tables
            return opened
        # What optuna.load_study would wrap the RDBStorage in, under the reconnecting layer.
        return ReconnectingStorage(OneReadPerTrial(cached_storage(opened)), target.display,
                                   give_up_after=reconnect_for)
    except HpoError:
        raise
    except (OSError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot open storage {target.display}: {scrub(str(exc))}") from None
    except Exception as exc:  # sqlalchemy's errors: connection refused, bad password, ...
        reason = scrub(str(getattr(exc, "orig", None) or exc)).strip().splitlines()
        raise StorageError(
            f"cannot open storage {target.display}: {reason[0] if reason else type(exc).__name__}"
        ) from None


def _open_rdb(target: StorageTarget, options: dict[str, Any], *, read_only: bool) -> BaseStorage:
    """The RDBStorage of ``target`` with engine ``options``, its schema checked (``read_only``
    as for ``open_storage``: an empty storage where there are no Optuna tables)."""
    from hpo.storage.existing import empty_storage, has_optuna_tables

    if read_only:
        _require_sqlite_file(target)
        if not has_optuna_tables(target.url, options):
            return empty_storage()
    # Optuna creates its tables (and stamps alembic's version) unless told not to. Its
    # schema check holds one connection while it opens another, which can deadlock
    # workers behind a transaction-mode pooler: hpo's check reads one at a time.
    # An RDBStorage whose trial creation holds the study's row lock for one round trip
    # instead of four (every worker's ask waits for that lock).
    from hpo.storage.optuna_internals import OneTripTrialCreation, check_schema_version

    rdb = OneTripTrialCreation(target.url, engine_kwargs=options,
                               skip_table_creation=read_only, skip_compatibility_check=True)
    check_schema_version(rdb)
    return rdb


def _require_sqlite_file(target: StorageTarget) -> None:
    """Connecting to a missing SQLite file creates it: a reader refuses first."""
    from hpo.storage.existing import missing_file_message, sqlite_file

    if target.url.startswith("sqlite"):
        path = sqlite_file(target.url)
        if path is not None and not path.exists():
            raise UsageError(missing_file_message(path))
