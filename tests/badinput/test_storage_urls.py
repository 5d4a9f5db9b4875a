"""Malformed and hostile storage URLs: each is refused with one ``Error:`` line (exit 2, or 1
when a well-formed URL names a database that cannot be reached), the password never shows
(not a fragment of it, not with ``--debug``, not in a log record), and nothing is created.

The malformed ones are refused before anything connects: the ``no_network`` fixture fails
the test on a DNS lookup or an attempt to open a database.
"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from tests.badinput import assert_refused, run_bounded, snapshot, within_bounds
from tests.specs import hpo_env

SECRET = f"Pw{uuid.uuid4().hex[:12]}"  # one per run: scrub() remembers passwords per process
ENCODING = "must be percent-encoded as %40"

# label -> (URL with {pw} for the password, what the error line says)
MALFORMED = {
    "unknown scheme": ("redis://admin:{pw}@127.0.0.1:6379/0", "unsupported storage URL scheme 'redis'"),
    "a scheme with a leading space": (" postgresql://hpo:{pw}@127.0.0.1/hpo",
                                      "unsupported storage URL scheme ' postgresql'"),
    "an unencoded '@' in the password": ("postgresql://hpo:{pw}@{pw}@127.0.0.1:5432/hpo", ENCODING),
    "an '@' in user and password": ("postgresql://me@corp:{pw}@x{pw}@127.0.0.1/hpo", ENCODING),
    "an '@' in a query password": ("postgresql://hpo@127.0.0.1/hpo?password={pw}@{pw}", ENCODING),
    "a '%' that is no percent-encoding": ("postgresql://hpo:{pw}%zz@127.0.0.1:5432/hpo", "write '%' as %25"),
    "a port past 65535": ("postgresql://hpo:{pw}@127.0.0.1:99999/hpo", "is not a number from 1 to 65535"),
    "port 0": ("postgresql://hpo:{pw}@127.0.0.1:0/hpo", "is not a number from 1 to 65535"),
    "a port that is no number": ("postgresql://hpo:{pw}@127.0.0.1:5432x/hpo", "is not a number from 1 to 65535"),
    "a forgotten host (user:PASSWORD reads as host:port)": ("postgresql://hpo:{pw}/hpo", "the port in storage URL postgresql://hpo:***/hpo"),
    "an unclosed IPv6 bracket": ("postgresql://hpo:{pw}@[::1/hpo", "opens a '['"),
    "no database": ("postgresql://hpo:{pw}@127.0.0.1:5432", "names no database"),
    "no database, only a slash": ("postgresql://hpo:{pw}@127.0.0.1/?sslmode=disable", "names no database"),
    "nothing after the scheme": ("postgresql://", "names no database"),
    "a newline": ("postgresql://hpo:{pw}@127.0.0.1:5432/hpo\nrm -rf /", "control character ('\\n' at position"),
    "a NUL byte": ("postgresql://hpo:{pw}@127.0.0.1/hp\x00o", "control character ('\\x00'"),
    "a newline inside the password": ("postgresql://hpo:{pw}\n{pw}@127.0.0.1/hpo", "control character"),
    "a 100 kB URL": ("postgresql://hpo:{pw}@127.0.0.1/" + "a" * 100_000, "characters long (at most 4,096)"),
    "sqlite in memory": ("sqlite://", "in-memory database would be gone"),
    "sqlite :memory:": ("sqlite:///:memory:", "in-memory database would be gone"),
    "sqlite to a directory": ("sqlite:///adir", "names a directory, not a database file"),
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory with one empty sub-directory, and no storage from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    monkeypatch.delenv("HPO_DEBUG", raising=False)
    (tmp_path / "adir").mkdir()
    return tmp_path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna
    import sqlalchemy

    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args[:2]!r}"[:200])

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", refuse)
    monkeypatch.setattr(sqlalchemy, "create_engine", refuse)


def tree(root: Path) -> tuple[list[str], dict[str, str]]:
    return sorted(str(p) for p in root.rglob("*")), snapshot(root)


def assert_secret_hidden(output: str, logged: str) -> None:
    for text in (output, logged):
        assert SECRET not in text and SECRET[2:10] not in text, "the password shows"


# An environment variable cannot hold a NUL byte: those URLs are tried as an option only.
CASES = [(label, how) for label in MALFORMED for how in ("option", "env")
         if not (how == "env" and "\x00" in MALFORMED[label][0])]


@pytest.mark.parametrize("label, how", CASES)
def test_a_malformed_url_is_refused_before_anything_connects(workdir, no_network, caplog, label, how):
    caplog.set_level(logging.DEBUG)
    url, says = MALFORMED[label]
    url = url.format(pw=SECRET)
    before = tree(workdir)
    for debug in ([], ["--debug"]):
        args = [*debug, "study", "list", *(["--storage", url] if how == "option" else [])]
        with within_bounds(seconds=20, megabytes=100):
            result = CliRunner().invoke(cli, args, env={"HPO_STORAGE": url} if how == "env" else None)
        if debug:
            assert result.exit_code == 2 and result.stderr.splitlines()[-1].startswith("Error: ")
        else:
            assert_refused(result, says=says, exit_code=2)
            assert len(result.stderr) < 1000  # the 100 kB URL is not printed back
        assert_secret_hidden(result.output, "\n".join(r.getMessage() for r in caplog.records))
    assert tree(workdir) == before


def closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Well-formed, but nothing answers: exit 1, with the URL redacted.
UNREACHABLE = {
    "a closed port": ("postgresql://hpo:{pw}@127.0.0.1:{port}/hpo", "refused"),
    "an empty host (a Unix socket) in a missing directory": (
        "postgresql://hpo:{pw}@/hpo?host=/nonexistent-hpo-socket-dir", "No such file or directory"),
    "mysql (no driver, or a closed port)": ("mysql://hpo:{pw}@127.0.0.1:{port}/hpo", "cannot open storage mysql://hpo:***@"),
}


@pytest.mark.parametrize("label", list(UNREACHABLE))
def test_an_unreachable_database_is_a_runtime_error_without_the_password(workdir, caplog, label):
    caplog.set_level(logging.DEBUG)
    url, says = UNREACHABLE[label]
    url = url.format(pw=SECRET, port=closed_port())
    before = tree(workdir)
    with within_bounds(seconds=60, megabytes=200):
        result = CliRunner().invoke(cli, ["study", "list", "--storage", url])
    assert_refused(result, says=[says, "Error: cannot open storage "], exit_code=1)
    assert_secret_hidden(result.output, "\n".join(r.getMessage() for r in caplog.records))
    assert tree(workdir) == before


@pytest.mark.subprocess
def test_the_real_entry_point_refuses_an_unencoded_at_with_and_without_debug(workdir):
    """Through ``python -m hpo``: its logging setup, and Optuna's handler, as a user gets them."""
    url = f"postgresql://hpo:{SECRET}@frag{SECRET[::-1]}@127.0.0.1:5432/hpo"
    plain = run_bounded("study", "list", cwd=workdir, env=hpo_env(storage=url))
    assert_refused(plain.result, says=[ENCODING, "postgresql://hpo:***@127.0.0.1:5432/hpo"])
    debug = run_bounded("--debug", "worker", "x", "--storage", url, cwd=workdir)
    assert debug.result.returncode == 2 and "Traceback" in debug.result.stderr
    assert ENCODING in debug.result.stderr.splitlines()[-1]
    for run in (plain, debug):
        output = run.result.stdout + run.result.stderr
        assert SECRET not in output and SECRET[::-1] not in output
        assert run.peak_mb < 400, run.peak_mb
    assert tree(workdir) == ([str(workdir / "adir")], {})
