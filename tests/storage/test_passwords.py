"""A PostgreSQL password never shows: not in any command's output (successes, failures,
``--debug`` tracebacks), and not in anything stored in the study's database.

Every command runs as a subprocess through the real entry point, so the logging setup of
``hpo.cli.main.main`` and Optuna's own log handler are what a user would get. The URL
reaches the commands through ``--storage`` in some cases and ``$HPO_STORAGE`` in others.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from tests.specs import hpo_env, run_hpo, start_hpo, wait_all, write_spec

pytestmark = [pytest.mark.subprocess]

STUDY = "secret-study"
N_TRIALS = 4


class Run:
    """One study in its own database, created and run by the CLI."""

    def __init__(self, server, url: str, root) -> None:
        self.server, self.url, self.root = server, url, root
        self.password = server.password
        parts = urlsplit(url)
        self.dbname = parts.path.lstrip("/")
        self.redacted = f"postgresql://hpo:***@127.0.0.1:{server.port}/{self.dbname}"
        self.spec = write_spec(root, STUDY, n_trials=N_TRIALS, epochs=1)
        self.outputs: dict[str, subprocess.CompletedProcess[str]] = {}

    def hpo(self, label: str, *args: str, via: str = "env", url: str | None = None,
            debug: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``hpo ARGS`` with the storage URL ``via`` --storage or $HPO_STORAGE."""
        url = url or self.url
        prefix = ["--debug"] if debug else []
        if via == "option":
            result = run_hpo(*prefix, *args, "--storage", url, env=hpo_env(), cwd=self.root)
        else:
            result = run_hpo(*prefix, *args, env=hpo_env(storage=url), cwd=self.root)
        self.outputs[label] = result
        return result


def shown(result: subprocess.CompletedProcess[str], *secrets: str) -> str:
    """The output of ``result`` with every secret masked, for assertion messages."""
    text = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    for secret in secrets:
        text = text.replace(secret, "<SECRET>")
    return text


def assert_no_secret(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout + result.stderr, (
            "a password appears in this output:\n" + shown(result, *secrets))


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@{parts.hostname}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def run(postgres_server, tmp_path_factory):
    """Create a study with --storage, run it with two workers (one given the URL with
    --storage, one through $HPO_STORAGE), then run every reading command."""
    if not postgres_server.is_running:  # an earlier fault test left it down
        postgres_server.start()
    dbname = f"t_passwords_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(dbname)
    r = Run(postgres_server, url, tmp_path_factory.mktemp("passwords"))

    r.hpo("create", "study", "create", str(r.spec), via="option")
    assert r.outputs["create"].returncode == 0, shown(r.outputs["create"], r.password)

    workers = [
        start_hpo("worker", STUDY, "--quiet", "--storage", url, env=hpo_env(), cwd=r.root),
        start_hpo("worker", STUDY, "--quiet", env=hpo_env(storage=url), cwd=r.root),
    ]
    for label, result in zip(("worker --storage", "worker env"), wait_all(workers)):
        r.outputs[label] = result
        assert result.returncode == 0, shown(result, r.password)

    r.hpo("list --storage", "study", "list", via="option")
    r.hpo("list json env", "study", "list", "--format", "json")
    r.hpo("show env", "study", "show", STUDY)
    r.hpo("show json --storage", "study", "show", STUDY, "--format", "json", via="option")
    r.hpo("best --storage", "study", "best", STUDY, via="option")
    r.hpo("best yaml env", "study", "best", STUDY, "--format", "yaml")
    r.hpo("best json env", "study", "best", STUDY, "--format", "json")
    r.hpo("space preview env", "space", "preview", str(r.spec), "-n", "2")
    r.hpo("worker after the budget", "worker", STUDY, "--quiet", via="option")
    yield r
    with contextlib.suppress(psycopg2.Error):  # cleanup only: the whole server goes at the end of the session
        postgres_server.drop_database(dbname)


COMMANDS = [
    "create", "worker --storage", "worker env", "list --storage", "list json env", "show env",
    "show json --storage", "best --storage", "best yaml env", "best json env",
    "space preview env", "worker after the budget",
]


@pytest.mark.slow
@pytest.mark.parametrize("label", COMMANDS)
def test_successful_commands_never_print_the_password(run, label):
    result = run.outputs[label]
    assert result.returncode == 0, shown(result, run.password)
    assert_no_secret(result, run.password)
    assert "Traceback" not in result.stderr, shown(result, run.password)


@pytest.mark.slow
def test_commands_that_name_the_storage_show_it_redacted(run):
    create = run.outputs["create"].stdout.splitlines()
    assert create[0] == f"Created study '{STUDY}' in {run.redacted}"
    assert create[1].startswith("Artifacts go to ") and create[1].endswith("hpo-artifacts")
    # The hint to start workers must not hand the password back either.
    assert create[2] == f"Start workers with: hpo worker {STUDY} --storage {run.redacted}"


@pytest.mark.slow
def test_the_commands_really_read_the_study(run):
    # Guard for the tests above: outputs without a password must be real outputs.
    assert "Worker done: " in run.outputs["worker env"].stdout
    listed = run.outputs["list --storage"].stdout  # a table with one body row
    assert "No studies." not in listed and "│" in listed
    assert f'"name": "{STUDY}"' in run.outputs["list json env"].stdout
    assert f"Study {STUDY}" in run.outputs["show env"].stdout
    assert f"name: {STUDY}-trial-" in run.outputs["best yaml env"].stdout
    assert "budget spent" in run.outputs["worker after the budget"].stdout


def stored_text(url: str) -> list[tuple[str, str]]:
    """Every row of every table of the database, as (table, the row as text)."""
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
            tables = cur.fetchall()
            rows = []
            for schema, table in tables:
                cur.execute(f'SELECT t::text FROM "{schema}"."{table}" t')
                rows += [(table, row[0]) for row in cur.fetchall()]
            return rows
    finally:
        conn.close()


@pytest.mark.slow
def test_nothing_stored_contains_the_password(run):
    rows = stored_text(run.url)
    counts = collections.Counter(table for table, _ in rows)
    # The dump covers Optuna's tables, and the study and its trials really are in them.
    assert counts["trials"] >= N_TRIALS and counts["trial_user_attributes"] > 0
    assert counts["studies"] == 1 and counts["study_user_attributes"] > 0
    assert any(STUDY in text for table, text in rows if table == "studies")
    assert any("hpo:spec" in text for table, text in rows if table == "study_user_attributes")
    leaked = sorted({table for table, text in rows if run.password in text})
    assert not leaked, f"the password is stored in table(s) {leaked}"
    urls = sorted({table for table, text in rows if "postgresql://" in text})
    assert not urls, f"a storage URL is stored in table(s) {urls}"


@pytest.mark.slow
def test_delete_names_the_storage_redacted(run):
    result = run.hpo("delete", "study", "delete", STUDY, "--yes", via="option")
    assert result.returncode == 0, shown(result, run.password)
    assert_no_secret(result, run.password)
    assert result.stdout.splitlines()[0] == f"Deleted study '{STUDY}' from {run.redacted}"
    assert result.stdout.splitlines()[1].startswith("Removed its artifacts: ")
    result = run.hpo("delete again", "study", "delete", STUDY, "--yes")
    assert result.returncode == 2, shown(result, run.password)
    assert_no_secret(result, run.password)
    assert result.stderr.startswith(f"Error: no study named '{STUDY}' in {run.redacted}")


# ------------------------------------------------------------------ failing commands


def failing_cases(server, url: str) -> dict[str, tuple[str, str, str]]:
    """label -> (URL, what the error must say, a secret that must not show)."""
    wrong = f"Wrong{uuid.uuid4().hex[:16]}"
    return {
        "wrong database": (with_database(url, "no_such_db"), 'database "no_such_db" does not exist',
                           server.password),
        "unreachable port": (with_port(url, closed_port()), "refused", server.password),
        "wrong password": (with_password(url, wrong), 'password authentication failed for user "hpo"',
                           wrong),
    }


@pytest.mark.parametrize("case, via, command", [
    ("wrong database", "option", "study list"),
    ("wrong database", "env", "worker"),
    ("unreachable port", "env", "study show"),
    ("unreachable port", "option", "study create"),
    ("wrong password", "option", "study best"),
    ("wrong password", "env", "study delete"),
    ("wrong password", "env", "study create"),
])
def test_failing_commands_never_print_the_password(postgres_server, postgres_url, tmp_path,
                                                   case, via, command):
    url, reason, secret = failing_cases(postgres_server, postgres_url)[case]
    r = Run(postgres_server, url, tmp_path)
    args = {
        "study list": ("study", "list"),
        "study show": ("study", "show", STUDY),
        "study best": ("study", "best", STUDY),
        "study delete": ("study", "delete", STUDY, "--yes"),
        "study create": ("study", "create", str(r.spec)),
        "worker": ("worker", STUDY, "--quiet"),
    }[command]
    result = r.hpo(case, *args, via=via)
    assert result.returncode == 1, shown(result, secret, postgres_server.password)
    assert_no_secret(result, secret, postgres_server.password)
    assert "Traceback" not in result.stderr, shown(result, secret, postgres_server.password)
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1, shown(result, secret, postgres_server.password)
    redacted = f"postgresql://hpo:***@127.0.0.1:{urlsplit(url).port}/{urlsplit(url).path[1:]}"
    assert error[0].startswith(f"Error: cannot open storage {redacted}: "), error[0]
    assert reason in error[0]


@pytest.mark.parametrize("case, how", [
    ("unreachable port", "--debug"),
    ("wrong password", "--debug"),
    ("wrong database", "HPO_DEBUG=1"),
])
def test_debug_tracebacks_never_show_the_password(postgres_server, postgres_url, tmp_path, case, how):
    url, reason, secret = failing_cases(postgres_server, postgres_url)[case]
    r = Run(postgres_server, url, tmp_path)
    if how == "--debug":
        result = r.hpo(case, "study", "create", str(r.spec), via="option", debug=True)
    else:
        result = run_hpo("study", "list", env=hpo_env(storage=url, HPO_DEBUG="1"), cwd=tmp_path)
    assert result.returncode == 1, shown(result, secret, postgres_server.password)
    assert "Traceback (most recent call last)" in result.stderr, (
        shown(result, secret, postgres_server.password))
    assert_no_secret(result, secret, postgres_server.password)
    assert "Error: cannot open storage postgresql://hpo:***@" in result.stderr
    assert reason in result.stderr


def test_an_unsupported_scheme_with_debug_never_shows_the_password(tmp_path):
    secret = f"Mongo{uuid.uuid4().hex[:16]}"
    result = run_hpo("--debug", "study", "list", "--storage",
                     f"mongodb://hpo:{secret}@127.0.0.1:27017/db", env=hpo_env(), cwd=tmp_path)
    assert result.returncode == 2, shown(result, secret)
    assert_no_secret(result, secret)
    assert "Error: unsupported storage URL scheme 'mongodb' in mongodb://hpo:***@127.0.0.1:27017/db" \
        in result.stderr


def test_a_storage_target_never_shows_the_password_in_its_repr():
    """A target in a debugger, a log line or a pytest failure shows the redacted URL only."""
    from hpo.storage.urls import resolve_storage

    secret = f"Repr{uuid.uuid4().hex[:16]}"
    target = resolve_storage(f"postgresql+psycopg2://hpo:{secret}@127.0.0.1:5432/db")
    assert secret in target.url  # still there for the storage to connect with
    for text in (repr(target), str(target), f"{target}", repr([target]), repr({"target": target})):
        assert secret not in text
        assert "postgresql+psycopg2://hpo:***@127.0.0.1:5432/db" in text
