"""What several benchmarks share: the machine's description and a PostgreSQL to run on."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@contextlib.contextmanager
def postgres(url: str | None, database: str = "bench") -> Iterator[str]:
    """``url`` itself, or a database on a throwaway server started from the installed
    PostgreSQL binaries (the test suite's tests/postgres.py), removed afterwards."""
    if url:
        yield url
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres import PostgresServer, find_pg_bin_dir

    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL server binaries not found: install postgresql or pass --storage URL")
    with PostgresServer(bin_dir) as server:
        yield server.create_database(database)
