"""The test PostgreSQL server itself: password logins, stop/restart/kill, one database per test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
_seen_databases: list[str] = []


def _query(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def test_connects_with_the_password(postgres_server, postgres_url):
    parts = urlsplit(postgres_server.url)
    assert parts.hostname == "127.0.0.1"
    assert parts.port == postgres_server.port != 5432
    assert parts.password == postgres_server.password
    assert len(postgres_server.password) == 24 and postgres_server.password.isalnum()
    assert postgres_server.password not in repr(postgres_server)

    assert _query(postgres_server.url, "SELECT current_user, current_database()") == [
        ("hpo", "hpo")
    ]
    dbname = urlsplit(postgres_url).path.lstrip("/")
    assert _query(postgres_url, "SELECT current_database()") == [(dbname,)]
    assert _query(postgres_url, "SHOW max_connections") == [("200",)]
    assert _query(postgres_url, "SHOW listen_addresses") == [("127.0.0.1",)]


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_a_wrong_or_missing_password_is_rejected(postgres_server, password):
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(
            host="127.0.0.1",
            port=postgres_server.port,
            user="hpo",
            password=password,
            dbname="hpo",
            passfile="/dev/null",
            connect_timeout=5,
        )


def test_stop_then_start_and_restart_keep_port_and_data(postgres_server, postgres_url):
    port = postgres_server.port
    _query(postgres_url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    idle = psycopg2.connect(postgres_url)
    try:
        postgres_server.stop()
        assert not postgres_server.is_running
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(postgres_url, connect_timeout=2)
        with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)), idle.cursor() as cur:
            cur.execute("SELECT 1")

        postgres_server.start()
        assert postgres_server.port == port
        assert _query(postgres_url, "SELECT x FROM kept") == [(42,)]

        postgres_server.restart()
        assert postgres_server.port == port
        assert _query(postgres_url, "SELECT x FROM kept") == [(42,)]
    finally:
        idle.close()
        postgres_server.start()  # no-op when running: never leave it down for later tests


def test_kill_then_start_recovers_committed_data(postgres_server, postgres_url):
    _query(postgres_url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
    try:
        postgres_server.kill()
        assert not postgres_server.is_running
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(postgres_url, connect_timeout=2)
        postgres_server.start()
        assert _query(postgres_url, "SELECT x FROM kept") == [(7,)]
    finally:
        postgres_server.start()


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_its_own_fresh_database(postgres_server, postgres_url, round_):
    name = urlsplit(postgres_url).path.lstrip("/")
    assert name not in _seen_databases
    assert _query(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [
        (0,)
    ]
    # Databases of earlier tests are dropped when they end.
    existing = {row[0] for row in _query(postgres_server.admin_url, "SELECT datname FROM pg_database")}
    assert name in existing and not existing.intersection(_seen_databases)
    _query(postgres_url, "CREATE TABLE mine (x int)")
    _seen_databases.append(name)


def test_create_database_rejects_names_that_need_quoting(postgres_server):
    with pytest.raises(ValueError, match="database name"):
        postgres_server.create_database('x"; DROP DATABASE hpo; --')


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("true", "1 error"), ("", "1 skipped")],
)
def test_missing_binaries_skip_locally_but_fail_under_ci(tmp_path, ci, outcome):
    # Run the real conftest against a stand-in `postgres` module that finds no binaries.
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "postgres.py").write_text(
        "def find_pg_bin_dir():\n    return None\n\nclass PostgresServer:\n    pass\n"
    )
    (tmp_path / "test_uses_pg.py").write_text(
        textwrap.dedent(
            """
            def test_needs_server(postgres_url):
                pass
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = ci
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rse", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "PostgreSQL server binaries not found: install postgresql" in result.stdout
    assert "(Debian: apt-get install postgresql) or set HPO_PG_BIN" in result.stdout


def test_tests_that_use_the_server_are_marked_postgres(request):
    """tests/conftest.py marks them at collection: a fixture's closure is enough."""
    here = {item.name: item for item in request.session.items if item.path == request.node.path}
    if "test_connects_with_the_password" not in here:
        pytest.skip("the tests that use the server were deselected")
    assert here["test_connects_with_the_password"].get_closest_marker("postgres")  # postgres_url
    assert here["test_create_database_rejects_names_that_need_quoting"].get_closest_marker("postgres")  # the server
    assert not request.node.get_closest_marker("postgres")
