"""Fixtures shared by the whole suite: a real PostgreSQL server for storage tests.

Every test that uses the server (through ``postgres_server`` or ``postgres_url``, directly or
through another fixture) is marked ``postgres`` here, at collection, so the mark cannot be
forgotten: ``-m "not postgres"`` runs the rest without a server.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg2
import pytest

if __package__:  # the suite: tests/ is a package (tests/__init__.py)
    from .postgres import PostgresServer, find_pg_bin_dir
else:  # a copy beside a stand-in postgres.py (tests/storage/test_postgres_server.py makes one)
    from postgres import PostgresServer, find_pg_bin_dir

if TYPE_CHECKING:  # imported in its fixture: the copy above has no pgbouncer.py beside it
    from tests.pgbouncer import PgBouncer

POSTGRES_FIXTURES = frozenset({"postgres_server", "postgres_url", "pgbouncer_server", "pgbouncer_url"})
# Server connections the session's PgBouncer keeps per database (its default_pool_size).
PGBOUNCER_POOL_SIZE = 8

PG_MISSING = (
    "PostgreSQL server binaries not found: install postgresql "
    "(Debian: apt-get install postgresql) or set HPO_PG_BIN"
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test whose fixtures (their whole closure) include the server."""
    for item in items:
        if POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session", autouse=True)
def dataset_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Workers' on-disk dataset cache (hpo.training.cache) in the session's tmp folder, never
    the user's ~/.cache/hpo; every subprocess the tests start inherits it."""
    previous = os.environ.get("HPO_CACHE_DIR")
    os.environ["HPO_CACHE_DIR"] = str(tmp_path_factory.mktemp("hpo-cache"))
    yield
    if previous is None:
        del os.environ["HPO_CACHE_DIR"]
    else:
        os.environ["HPO_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session; fault tests may stop/kill/restart it.

    Skipped where PostgreSQL is not installed, except under CI=true, where a missing server
    must fail the run rather than quietly skip every storage test.
    """
    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(PG_MISSING, pytrace=False)
        pytest.skip(PG_MISSING)
    with PostgresServer(bin_dir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL (with password) of a fresh, empty database on the session server, for this test."""
    if not postgres_server.is_running:  # an earlier fault test left it down
        postgres_server.start()
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40].strip("_")
    name = f"t_{stem}_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    yield url
    if postgres_server.is_running:
        with contextlib.suppress(psycopg2.Error):  # cleanup only: the whole server is deleted at the end
            postgres_server.drop_database(name)


def _missing(message: str) -> None:
    """Skip, except under CI=true, where a missing server must fail the run instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pgbouncer_server(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the session's server, at most
    ``PGBOUNCER_POOL_SIZE`` server connections per database (tests/pgbouncer.py).

    Skipped where pgbouncer is not installed, failed instead under CI=true."""
    from tests.pgbouncer import MISSING, PgBouncer, find_pgbouncer

    binary = find_pgbouncer()
    if binary is None:
        _missing(MISSING)
    if not postgres_server.is_running:  # an earlier fault test left it down
        postgres_server.start()
    with PgBouncer(postgres_server, binary=binary, pool_size=PGBOUNCER_POOL_SIZE) as bouncer:
        yield bouncer


@pytest.fixture
def pgbouncer_url(pgbouncer_server: PgBouncer, postgres_url: str) -> str:
    """``postgres_url`` (a fresh database for this test) through the session's PgBouncer."""
    return pgbouncer_server.through(postgres_url)
