"""Storage URLs: which storage a command uses, what it may print about it, and the engine
settings a PostgreSQL storage really gets."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.errors import UsageError
from hpo.storage.proxies import rdb_backend
from hpo.storage.secrets import ScrubSecretsFilter, redact, scrub
from hpo.storage.urls import DEFAULT_FILE, ENV_VAR, open_storage, resolve_storage
from tests.specs import write_spec

ACCEPTED = (
    "(expected postgresql://USER:PASSWORD@HOST:5432/DB, sqlite:///FILE, or a file path for "
    "the embedded journal store)"
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $HPO_STORAGE, and a fresh current directory."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("HPO_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str, env: dict[str, str | None] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def unique_password(prefix: str = "pw") -> str:
    # scrub() remembers every password seen by this process: keep each test's its own.
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ which storage


def test_default_is_the_journal_file_in_the_current_directory(clean_env):
    target = resolve_storage(None)
    assert target.kind == "journal" and target.is_default
    assert target.url == target.display == str(clean_env / DEFAULT_FILE)


def test_env_var_beats_the_default(clean_env, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(clean_env / "from-env.journal"))
    target = resolve_storage(None)
    assert (target.url, target.kind, target.is_default) == (
        str(clean_env / "from-env.journal"), "journal", False)


def test_option_beats_the_env_var(clean_env, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(clean_env / "from-env.journal"))
    target = resolve_storage(str(clean_env / "from-option.journal"))
    assert (target.url, target.is_default) == (str(clean_env / "from-option.journal"), False)


def test_an_empty_env_var_counts_as_unset(clean_env, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "")
    assert resolve_storage(None).is_default


def test_the_cli_says_which_default_file_it_uses(clean_env):
    default = clean_env / DEFAULT_FILE
    result = invoke("study", "list")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Using the embedded storage {default}\n"
    assert result.stdout == "No studies.\n"
    assert not default.exists()  # reading never creates the store

    result = invoke("study", "create", str(write_spec(clean_env, "here")))
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Using the embedded storage {default}\n"
    assert result.stdout.splitlines()[0] == f"Created study 'here' in {default}"
    assert default.is_file()


def test_the_cli_follows_option_then_env_then_default(clean_env):
    spec = write_spec(clean_env, "where")
    by_option, by_env = clean_env / "option.journal", clean_env / "env.journal"

    # --storage wins over $HPO_STORAGE ...
    result = invoke("study", "create", str(spec), "--storage", str(by_option),
                    env={ENV_VAR: str(by_env)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"Created study 'where' in {by_option}"
    assert result.stderr == ""  # no "Using the embedded storage": it was chosen
    assert by_option.is_file() and not by_env.exists()
    assert not (clean_env / DEFAULT_FILE).exists()

    # ... $HPO_STORAGE wins over the default file ...
    result = invoke("study", "list", "--format", "json", env={ENV_VAR: str(by_option)})
    assert result.exit_code == 0, result.output
    assert '"name": "where"' in result.stdout and result.stderr == ""
    result = invoke("study", "list", env={ENV_VAR: str(by_env)})  # named, so it must exist
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: storage file {by_env} does not exist")
    assert not by_env.exists()

    # ... and the default file is a different, empty storage.
    result = invoke("study", "list")
    assert result.stdout == "No studies.\n"
    assert result.stderr == f"Using the embedded storage {clean_env / DEFAULT_FILE}\n"


# ------------------------------------------------------------------ unsupported URLs


@pytest.mark.parametrize("how", ["option", "env"])
def test_an_unsupported_scheme_is_a_usage_error_without_the_password(clean_env, how):
    password = unique_password("redis")
    url = f"redis://admin:{password}@cache.example:6379/0"
    args = ["study", "list"] + (["--storage", url] if how == "option" else [])
    result = invoke(*args, env={ENV_VAR: url} if how == "env" else None)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: unsupported storage URL scheme 'redis' in redis://admin:***@cache.example:6379/0 "
        + ACCEPTED + "\n"
    )
    assert password not in result.output


def test_resolve_storage_rejects_an_unknown_scheme_by_name():
    with pytest.raises(UsageError) as info:
        resolve_storage("mongodb+srv://u:topsecret1@db.example/x")
    assert "'mongodb'" in str(info.value) and ACCEPTED in str(info.value)
    assert "topsecret1" not in str(info.value)


@pytest.mark.parametrize("url", [
    "postgresql://hpo:{pw}@127.0.0.1:5432/hpo",
    "postgresql+psycopg2://hpo:{pw}@db/hpo",
    "POSTGRESQL://hpo:{pw}@db/hpo",
    "sqlite:///studies.db",
])
def test_supported_urls_are_rdb_storages_shown_redacted(url):
    url = url.format(pw=unique_password())
    target = resolve_storage(url)
    assert target.kind == "rdb" and not target.is_default
    assert target.url == url
    assert target.display == redact(url)


# ------------------------------------------------------------------ redact and scrub


@pytest.mark.parametrize("url, shown", [
    ("postgresql://hpo:secret@db/hpo", "postgresql://hpo:***@db/hpo"),
    ("postgresql://hpo:secret@db.example:5432/hpo", "postgresql://hpo:***@db.example:5432/hpo"),
    ("postgresql+psycopg2://hpo:secret@10.0.0.5:6543/studies",
     "postgresql+psycopg2://hpo:***@10.0.0.5:6543/studies"),
    ("postgresql://hpo:p%40ss%3Aw%2Frd@db:5432/hpo", "postgresql://hpo:***@db:5432/hpo"),
    ("postgresql://hpo:pa:ss/w@db:5432/hpo", "postgresql://hpo:***@db:5432/hpo"),
    ("postgresql://hpo:secret@db:5432/hpo?sslmode=require&connect_timeout=5",
     "postgresql://hpo:***@db:5432/hpo?sslmode=require&connect_timeout=5"),
    ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
    # An unencoded '@' in the password: the userinfo runs to the last '@', not the first.
    ("postgresql://u:pa@ssSECRET@db/hpo", "postgresql://u:***@db/hpo"),
    ("postgresql://u:a@b@c@db:5432/hpo", "postgresql://u:***@db:5432/hpo"),
    ("postgresql://u@corp:pw@db/hpo", "postgresql://u@corp:***@db/hpo"),  # SQLAlchemy's user 'u@corp'
    ("postgresql://hpo@db/hpo?password=q@r&sslmode=require", "postgresql://hpo@db/hpo?password=***&sslmode=require"),
    # Nothing to hide: unchanged.
    ("postgresql://hpo@db:5432/hpo", "postgresql://hpo@db:5432/hpo"),
    ("postgresql://db:5432/hpo", "postgresql://db:5432/hpo"),
    ("postgresql:///hpo", "postgresql:///hpo"),
    ("sqlite:////tmp/studies.db", "sqlite:////tmp/studies.db"),
    ("/home/me/hpo-studies.journal", "/home/me/hpo-studies.journal"),
])
def test_redact(url, shown):
    assert redact(url) == shown
    assert redact(shown) == shown  # idempotent


def test_redact_hides_a_password_given_as_a_query_parameter():
    # libpq (and SQLAlchemy, which passes query parameters to psycopg2) accept the password
    # as ?password=..., so it is as much a secret as the one before the @.
    url = "postgresql://hpo@db:5432/hpo?sslmode=require&password=qsecret42"
    assert "qsecret42" not in redact(url)
    target = resolve_storage(url)
    assert "qsecret42" not in target.display
    assert "qsecret42" not in scrub("connection to db failed for password qsecret42")


def test_scrub_hides_every_spelling_of_a_seen_password():
    raw = f"p@ss/{uuid.uuid4().hex[:8]}"  # needs percent-encoding in a URL
    encoded = raw.replace("@", "%40").replace("/", "%2F")
    resolve_storage(f"postgresql://hpo:{encoded}@db:5432/hpo")
    text = f"failed: dsn password={raw} url postgresql://hpo:{encoded}@db/hpo"
    cleaned = scrub(text)
    assert raw not in cleaned and encoded not in cleaned
    assert cleaned == "failed: dsn password=*** url postgresql://hpo:***@db/hpo"


def test_scrub_leaves_text_without_secrets_alone():
    resolve_storage(f"postgresql://hpo:{unique_password()}@db/hpo")
    text = "cannot open storage postgresql://hpo:***@db/hpo: connection refused"
    assert scrub(text) == text


def test_scrub_only_knows_passwords_of_urls_it_has_resolved():
    never_seen = unique_password("unseen")
    assert scrub(f"x {never_seen} y") == f"x {never_seen} y"


def test_the_logging_filter_scrubs_formatted_records():
    password = unique_password("log")
    url = f"postgresql://hpo:{password}@db:5432/hpo"
    resolve_storage(url)
    record = logging.LogRecord("sqlalchemy", logging.WARNING, __file__, 1,
                               "connecting to %s failed (%d)", (url, 3), None)
    assert ScrubSecretsFilter().filter(record) is True
    assert record.getMessage() == "connecting to postgresql://hpo:***@db:5432/hpo failed (3)"


# ------------------------------------------------------------------ engine settings


def test_postgres_engine_settings_reach_sqlalchemy(postgres_url):
    storage = open_storage(resolve_storage(postgres_url))
    engine = storage.engine
    pool = engine.pool
    assert isinstance(pool, sqlalchemy.pool.QueuePool)
    assert pool.size() == 2  # a couple of connections per worker, not SQLAlchemy's 5 + 10
    assert pool._max_overflow == 1
    assert pool._pre_ping is True  # servers restart: test a pooled connection before use
    assert pool._recycle == 1800
    conn = engine.raw_connection()
    try:
        # A plain postgresql:// URL uses psycopg 3 under SQLAlchemy 2.1; its DSN hides the password.
        dsn = conn.dbapi_connection.info.dsn
        assert "connect_timeout=10" in dsn
    finally:
        conn.close()
    storage.engine.dispose()


def test_pre_ping_replaces_a_pooled_connection_the_server_dropped(postgres_server, postgres_url):
    storage = open_storage(resolve_storage(postgres_url))
    assert storage.get_all_studies() == []  # leaves one connection in the pool
    dbname = postgres_url.rsplit("/", 1)[1]
    admin = postgres_server.connect("postgres")
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
            assert cur.rowcount >= 1
    finally:
        admin.close()
    # Without pre-ping the dead pooled connection would fail this call.
    assert storage.get_all_studies() == []
    storage.engine.dispose()


def drop_connections(postgres_server, dbname: str) -> int:
    admin = postgres_server.connect("postgres")
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
            return cur.rowcount
    finally:
        admin.close()


def test_a_workers_storage_does_not_ping_and_retries_on_a_dropped_connection(postgres_server, postgres_url):
    # A worker's storage (reconnect_for) sends no ping before each transaction: its
    # reconnecting layer retries the call that meets the dead connection instead.
    storage = open_storage(resolve_storage(postgres_url), reconnect_for=30)
    rdb = rdb_backend(storage)
    assert rdb is not None and rdb.engine.pool._pre_ping is False
    assert storage.get_all_studies() == []
    assert drop_connections(postgres_server, postgres_url.rsplit("/", 1)[1]) >= 1
    assert storage.get_all_studies() == []
    rdb.engine.dispose()


def test_sqlite_urls_open_without_the_postgres_only_settings(tmp_path):
    storage = open_storage(resolve_storage(f"sqlite:///{tmp_path / 'studies.db'}"))
    assert storage.get_all_studies() == []
    assert not getattr(storage.engine.pool, "_pre_ping", False)
    storage.engine.dispose()


def test_optunas_own_log_handler_scrubs_passwords():
    import io
    import logging

    from hpo.study.studies import quiet_optuna

    resolve_storage("postgresql://hpo:optuna-log-secret@db:5432/hpo")  # remembers the password
    quiet_optuna()
    handlers = [h for h in logging.getLogger("optuna").handlers if isinstance(h, logging.StreamHandler)]
    assert handlers, "optuna logs through its own handler"
    buffer = io.StringIO()
    previous = [h.setStream(buffer) for h in handlers]  # wherever it wrote before (pytest swaps stderr)
    try:
        logging.getLogger("optuna.storages").warning("could not reach postgresql://hpo:optuna-log-secret@db")
    finally:
        for handler, stream in zip(handlers, previous):
            handler.setStream(stream)
    assert "optuna-log-secret" not in buffer.getvalue()
    assert "postgresql://hpo:***@db" in buffer.getvalue()


# ------------------------------------------------------------------ an unencoded '@' (issue 12)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any DNS lookup or any attempt to open a database."""
    import socket

    import optuna

    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", refuse)
    monkeypatch.setattr(sqlalchemy, "create_engine", refuse)


AT_PASSWORD = "Frag1x@Frag2y@Frag3z"  # no part of it may show
AT_URL = f"postgresql://hpo:{AT_PASSWORD}@127.0.0.1:5432/hpo"
AT_ERROR = (
    "Error: storage URL postgresql://hpo:***@127.0.0.1:5432/hpo has more than one '@': an '@' in "
    "the user name or password must be percent-encoded as %40 (and ':' as %3A, '/' as %2F, "
    "'%' as %25), e.g. postgresql://USER:p%40ss@HOST:5432/DB\n"
)


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("how", ["option", "env"])
def test_an_unencoded_at_in_the_password_is_refused_before_any_connection(
        clean_env, no_network, caplog, debug, how):
    caplog.set_level(logging.DEBUG)
    args = (["--debug"] if debug else []) + ["study", "list"] + (["--storage", AT_URL] if how == "option" else [])
    result = CliRunner().invoke(cli, args, env={ENV_VAR: AT_URL} if how == "env" else None)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.endswith(AT_ERROR)
    if not debug:
        assert result.stderr == AT_ERROR
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for fragment in AT_PASSWORD.split("@"):
        assert fragment not in result.output and fragment not in logged, fragment
    assert list(clean_env.iterdir()) == []


def test_an_unencoded_at_is_refused_by_every_command(clean_env, no_network):
    spec = write_spec(clean_env, "at")
    for args in (["study", "create", str(spec)], ["worker", "at"], ["study", "show", "at"],
                 ["dashboard"], ["study", "delete", "at", "--yes"]):
        result = CliRunner().invoke(cli, [*args, "--storage", AT_URL])
        assert (result.exit_code, result.stderr) == (2, AT_ERROR), args


def test_scrub_hides_the_whole_password_with_its_at_signs(no_network):
    password = f"{unique_password('at')}@tail{uuid.uuid4().hex[:6]}"
    with pytest.raises(UsageError):
        resolve_storage(f"postgresql://hpo:{password}@db/hpo")
    # What a driver would have said had the URL reached it.
    text = f"password {password} for host '{password.split('@')[1]}@db'"
    assert scrub(text) == f"password *** for host '{password.split('@')[1]}@db'"
    assert "path" in scrub("a file path")  # a short first fragment ('pa') is no secret of its own


def test_a_percent_encoded_at_is_accepted_and_stays_hidden():
    password = unique_password("enc") + "%40x"
    target = resolve_storage(f"postgresql://hpo:{password}@db:5432/hpo")
    assert target.display == "postgresql://hpo:***@db:5432/hpo"
    assert scrub(f"auth failed for {password.replace('%40', '@')}") == "auth failed for ***"
