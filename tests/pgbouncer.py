"""A throwaway PgBouncer for tests and benchmarks, in front of a tests/postgres.py server.

README tells users who outgrow PostgreSQL's connection limit to put PgBouncer in
*transaction* pooling mode in front of it; the tests check that hpo's workers really work that
way (each transaction may get another server connection) by starting one of their own: a temp
directory, a free port on 127.0.0.1, no Unix socket, never a system service.

No password is written anywhere: clients log in with SCRAM, and PgBouncer holds the server's
SCRAM verifier (read from ``pg_authid``), which it may also use to log in to the server for
them (PgBouncer >= 1.14, when the verifiers are identical and the database entry names no user).

The module imports only the standard library at import time, so `.ci/run` can run it with
any Python 3.8+ before the project is installed: ``python3 tests/pgbouncer.py --bin`` prints
the binary's path or exits 1.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from tests.postgres import PostgresServer

ENV_VAR = "HPO_PGBOUNCER"
# Debian installs it outside an ordinary user's PATH.
FALLBACK_DIRS = ("/usr/sbin", "/usr/local/sbin")
MISSING = "pgbouncer not found: install pgbouncer (Debian: apt-get install pgbouncer) or set HPO_PGBOUNCER"


class PgBouncerError(RuntimeError):
    """The test PgBouncer could not be found, set up or started."""


def find_pgbouncer() -> Path | None:
    """The pgbouncer binary: ``$HPO_PGBOUNCER``, else ``PATH``, else /usr/sbin; None if none.

    A ``$HPO_PGBOUNCER`` that is not an executable is an error, not a reason to look
    elsewhere: the user asked for it."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise PgBouncerError(f"{ENV_VAR}={explicit!r} is not an executable file")
        return path
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path=os.pathsep.join(FALLBACK_DIRS))
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> dict[str, Any]:
    """Popen arguments for a user PgBouncer accepts: it refuses to run as root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PgBouncerError("running as root, which pgbouncer refuses, and there is no 'postgres' user") from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class PgBouncer:
    """PgBouncer in ``pool_mode`` (transaction by default) in front of ``server``.

    At most ``pool_size`` server connections per (database, user) pair (``default_pool_size``;
    no reserve pool, so it is a hard bound) and ``max_client_conn`` clients. ``url_for(db)`` is
    the server's URL for ``db`` with PgBouncer's port; ``through(url)`` rewrites any URL of the
    server. ``show("POOLS")`` asks the admin console. ``settings`` adds or overrides lines of
    the ``[pgbouncer]`` section.
    """

    host = "127.0.0.1"

    def __init__(self, server: PostgresServer, *, pool_size: int = 8, max_client_conn: int = 1000,
                 pool_mode: str = "transaction", binary: Path | str | None = None,
                 settings: dict[str, Any] | None = None, startup_timeout: float = 30.0) -> None:
        if binary is None:
            binary = find_pgbouncer()
            if binary is None:
                raise PgBouncerError(MISSING)
        self.binary = Path(binary)
        self.server = server
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.pool_mode = pool_mode
        self.startup_timeout = startup_timeout
        self._settings = dict(settings or {})
        self.port: int | None = None
        self.base_dir: Path | None = None
        self._proc: subprocess.Popen | None = None

    # -- paths and URLs ------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        if self.base_dir is None:
            raise PgBouncerError("pgbouncer has not been started")
        return self.base_dir / "pgbouncer.log"

    def url_for(self, dbname: str) -> str:
        return self.through(self.server.url_for(dbname))

    def through(self, url: str) -> str:
        """``url`` (of the server behind) with PgBouncer's host and port instead."""
        if self.port is None:
            raise PgBouncerError("pgbouncer has not been started")
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{self.host}:{self.port}"))

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> PgBouncer:
        if self.is_running:
            return self
        if not self.server.is_running:
            raise PgBouncerError("the PostgreSQL server behind pgbouncer is not running")
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="hpo-pgbouncer-"))
        for attempt in range(3):
            self.port = _free_port()
            self._write_files()
            failure = self._launch_and_wait()
            if failure is None:
                atexit.register(self._atexit)
                return self
            if "Address already in use" not in failure or attempt == 2:
                raise PgBouncerError(f"pgbouncer did not start on {self.host}:{self.port}: {failure}\n"
                                     f"--- {self.log_path} ---\n{self.log_tail()}")
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT: PgBouncer's safe shutdown, which waits for running transactions."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop it and delete its directory."""
        atexit.unregister(self._atexit)
        try:
            self.stop()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                self.base_dir = None
            self.port = None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            self.close()

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the admin console ------------------------------------------------------------------

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console (POOLS, SERVERS, CLIENTS, STATS, ...) as dicts."""
        conn = self._admin_connection()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW {what}")
                names = [column[0] for column in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            conn.close()

    def _admin_connection(self, timeout: float = 5) -> Any:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.server.user, password=self.server.password,
                                dbname="pgbouncer", connect_timeout=timeout)
        conn.autocommit = True  # the console takes single SHOW commands, no BEGIN
        return conn

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, PgBouncerError):
            return "(no pgbouncer log)"

    # -- internals ------------------------------------------------------------------------

    def _scram_verifier(self) -> str:
        """The server's stored SCRAM secret for its user (not the password)."""
        conn = self.server.connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (self.server.user,))
                row = cur.fetchone()
        finally:
            conn.close()
        if not row or not str(row[0]).startswith("SCRAM-SHA-256$"):
            raise PgBouncerError(f"user {self.server.user!r} has no SCRAM-SHA-256 password on the server")
        return str(row[0])

    def _write_files(self) -> None:
        base = self.base_dir
        assert base is not None
        user = self.server.user
        (base / "userlist.txt").write_text(f'"{user}" "{self._scram_verifier()}"\n')
        settings: dict[str, Any] = {
            "listen_addr": self.host,
            "listen_port": self.port,
            "unix_socket_dir": "",  # TCP only: never a socket beside a system pgbouncer's
            "auth_type": "scram-sha-256",
            "auth_file": base / "userlist.txt",
            "admin_users": user,
            "pool_mode": self.pool_mode,
            "default_pool_size": self.pool_size,
            "min_pool_size": 0,
            "reserve_pool_size": 0,
            "max_client_conn": self.max_client_conn,
            "logfile": self.log_path,
            "pidfile": "",
            "server_login_retry": 1,  # the fault tests restart the server
        }
        settings.update(self._settings)
        lines = ["# written by tests/pgbouncer.py", "[databases]",
                 # No user= here: PgBouncer then logs in to the server as each client, with
                 # the client's SCRAM proof.
                 f"* = host={self.server.host} port={self.server.port}",
                 "", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        (base / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        run_as = _run_as()
        if run_as:
            for path in (base, *base.iterdir()):
                os.chown(path, run_as["user"], run_as["group"])
        os.chmod(base, 0o700)

    def _launch_and_wait(self) -> str | None:
        """Start pgbouncer and wait for its admin console to answer; None, or why not."""
        import psycopg2

        assert self.base_dir is not None
        # Its output goes to a file, never to a pipe: pgbouncer writes a line per login to
        # stderr as well as to its log, and blocks, all clients with it, once a pipe nobody
        # reads is full (about 300 logins).
        with open(self.base_dir / "stderr.log", "ab") as stderr:
            self._proc = subprocess.Popen(
                [str(self.binary), str(self.base_dir / "pgbouncer.ini")],
                cwd=self.base_dir, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                start_new_session=True, **_run_as(),
            )
        deadline = time.monotonic() + self.startup_timeout
        last_error = "timed out"
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                stderr = (self.base_dir / "stderr.log").read_text(errors="replace").strip()
                return f"exited with status {code}: {stderr[-2000:] or self.log_tail(5)}"
            try:
                self._admin_connection(timeout=2).close()
                return None
            except psycopg2.OperationalError as exc:
                last_error = str(exc).strip() or last_error
            if time.monotonic() >= deadline:
                self._proc.kill()
                self._proc.wait()
                self._proc = None
                return f"no admin login within {self.startup_timeout:g} s (last error: {last_error})"
            time.sleep(0.05)


@contextlib.contextmanager
def pgbouncer(server: PostgresServer, **kwargs: Any) -> Iterator[PgBouncer]:
    """``with pgbouncer(server, pool_size=8) as bouncer: url = bouncer.url_for("hpo")``."""
    with PgBouncer(server, **kwargs) as bouncer:
        yield bouncer


def _main(argv: Sequence[str]) -> int:
    import sys

    if list(argv) != ["--bin"]:
        print("usage: python3 tests/pgbouncer.py --bin", file=sys.stderr)
        return 2
    try:
        found = find_pgbouncer()
    except PgBouncerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if found is None:
        print(MISSING, file=sys.stderr)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
