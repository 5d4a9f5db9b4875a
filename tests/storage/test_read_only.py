"""Reading commands never write: on a storage that holds nothing yet they say so, and create
nothing (no Optuna tables in a database, no journal or SQLite file)."""

from __future__ import annotations

import psycopg2
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from tests.badinput import assert_refused
from tests.specs import write_spec

READERS = [
    ("study", "show", "nope"),
    ("study", "best", "nope"),
    ("study", "export", "nope", "--output", "{tmp}/trials.csv"),
    ("study", "report", "nope", "--output", "{tmp}/report"),
    ("retrain", "nope", "--output", "{tmp}/retrain"),
    ("study", "delete", "nope", "--yes"),
]


def _tables(url: str) -> list[str]:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
            return sorted(row[0] for row in cur.fetchall())
    finally:
        conn.close()


def _invoke(*args: str, storage: str):
    return CliRunner().invoke(cli, [*args, "--storage", storage])


def test_list_on_an_empty_database_creates_no_tables(postgres_url):
    result = _invoke("study", "list", storage=postgres_url)
    assert (result.exit_code, result.stdout) == (0, "No studies.\n"), result.output
    json_rows = _invoke("study", "list", "--format", "json", storage=postgres_url)
    assert (json_rows.exit_code, json_rows.stdout) == (0, "[]\n"), json_rows.output
    assert _tables(postgres_url) == []


def test_reading_an_unknown_study_on_an_empty_database_creates_no_tables(postgres_url, tmp_path):
    for args in READERS:
        result = _invoke(*(a.format(tmp=tmp_path) for a in args), storage=postgres_url)
        assert_refused(result, says="no study named 'nope'")
    assert _tables(postgres_url) == []
    assert list(tmp_path.iterdir()) == []  # no report, export or retrain folder either


def test_writers_still_create_the_tables_and_readers_then_read(postgres_url, tmp_path):
    created = _invoke("study", "create", str(write_spec(tmp_path, "first")), storage=postgres_url)
    assert created.exit_code == 0, created.output
    assert "studies" in _tables(postgres_url)
    listed = _invoke("study", "list", "--format", "json", storage=postgres_url)
    assert listed.exit_code == 0 and '"name": "first"' in listed.stdout, listed.output


@pytest.mark.parametrize("command", [("study", "list"), ("study", "show", "nope")])
def test_a_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path, command):
    path = tmp_path / "typo.db"
    result = _invoke(*command, storage=f"sqlite:///{path}")
    assert_refused(result, says=[str(path), "does not exist"])
    assert not path.exists()


def test_an_empty_sqlite_file_reads_as_no_studies_and_stays_empty(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    result = _invoke("study", "list", storage=f"sqlite:///{path}")
    assert (result.exit_code, result.stdout) == (0, "No studies.\n"), result.output
    assert path.stat().st_size == 0
