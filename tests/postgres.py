"""A throwaway PostgreSQL server for tests.

Storage tests run against a real server, and fault tests must be able to stop, restart and
kill it, so the tests start their own: a fresh data directory in a temp directory, a free port
on 127.0.0.1 and a socket directory of its own, so it never touches a system server.

Connections over TCP need a password (scram-sha-256), as in production: code that leaks or
drops the password fails here rather than in a user's cluster.

The module imports only the standard library at import time, so `.ci/run` can run it with any
Python 3.8+ to find the server binaries before the project is installed:
``python3 tests/postgres.py --bin-dir`` prints the directory or exits 1.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

SERVER_BINARIES = ("initdb", "postgres")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Signals pg_ctl sends for each shutdown mode.
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class PostgresServerError(RuntimeError):
    """The test server could not be set up, started or stopped."""


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in SERVER_BINARIES)


def _version_key(bin_dir: str) -> tuple:
    # /usr/lib/postgresql/<version>/bin: "15" > "9.6"; names that are not versions sort last.
    version = Path(bin_dir).parent.name
    try:
        return (1, tuple(int(part) for part in version.split(".")))
    except ValueError:
        return (0, ())


def find_pg_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None when there is none.

    Looks at ``$HPO_PG_BIN``, then ``pg_config --bindir``, then Debian's
    ``/usr/lib/postgresql/*/bin`` (newest version first), then ``PATH``. A ``$HPO_PG_BIN``
    without the binaries is an error, not a reason to look elsewhere: the user asked for it.
    """
    explicit = os.environ.get("HPO_PG_BIN")
    if explicit:
        path = Path(explicit).expanduser()
        if not _has_server_binaries(path):
            raise PostgresServerError(
                f"HPO_PG_BIN={explicit!r} does not contain executable "
                f"{' and '.join(SERVER_BINARIES)}"
            )
        return path

    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(Path(out))
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates.extend(Path(d) for d in debian)
    for name in SERVER_BINARIES:
        found = shutil.which(name)
        if found:
            candidates.append(Path(found).resolve().parent)

    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie holds no shared memory)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    children = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.split("/")[2]))
    return children


class PostgresServer:
    """A PostgreSQL server in a temp directory, for one test session (or one test).

    ``url`` points at database ``hpo`` as superuser ``hpo``; ``create_database`` makes more.
    ``stop``/``start``/``restart``/``kill`` are for fault tests: the port, password and data
    survive them. ``close`` (or leaving the ``with`` block) stops the server and deletes
    everything.
    """

    user = "hpo"
    host = "127.0.0.1"

    def __init__(
        self,
        bin_dir: Path | str | None = None,
        *,
        startup_timeout: float = 60.0,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if bin_dir is None:
            bin_dir = find_pg_bin_dir()
            if bin_dir is None:
                raise PostgresServerError(
                    "PostgreSQL server binaries not found: install postgresql "
                    "(Debian: apt-get install postgresql) or set HPO_PG_BIN"
                )
        self.bin_dir = Path(bin_dir)
        self.startup_timeout = startup_timeout
        self.password = "".join(
            secrets.choice(string.ascii_letters + string.digits) for _ in range(24)
        )
        self.port: int | None = None
        self.base_dir: Path | None = None
        self._settings = dict(settings or {})
        self._proc: subprocess.Popen | None = None
        self._run_as: dict[str, Any] | None = None
        self._initialized = False

    # -- paths and URLs ------------------------------------------------------------------

    def _require_base(self) -> Path:
        if self.base_dir is None:
            raise PostgresServerError("the server has not been started")
        return self.base_dir

    @property
    def data_dir(self) -> Path:
        return self._require_base() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._require_base() / "sock"

    @property
    def log_path(self) -> Path:
        return self._require_base() / "server.log"

    def url_for(self, dbname: str) -> str:
        if self.port is None:
            raise PostgresServerError("the server has not been started")
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    @property
    def url(self) -> str:
        """The ``hpo`` database, as the ``hpo`` superuser, with the password."""
        return self.url_for("hpo")

    @property
    def admin_url(self) -> str:
        """The ``postgres`` maintenance database, for CREATE/DROP DATABASE and the like."""
        return self.url_for("postgres")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self._proc.pid if self.is_running else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:  # never shows the password
        state = "running" if self.is_running else "stopped"
        return f"<PostgresServer {self.host}:{self.port} {state} dir={self.base_dir}>"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """Start the server (initialising it the first time) and wait until it accepts logins."""
        if self.is_running:
            return self
        if self.base_dir is None:
            self._init_cluster()
        deadline = time.monotonic() + self.startup_timeout
        first_start = self.port is None
        bind_failures = 0
        while True:
            if self.port is None:
                self.port = _free_port()
            log_offset = self._log_size()
            failure = self._launch_and_wait(deadline)
            if failure is None:
                break
            new_log = self._log_since(log_offset)
            time_left = time.monotonic() < deadline
            if "Address already in use" in new_log and first_start and bind_failures < 5:
                # Someone took the port between our probe and the bind: pick another. Only
                # the first time; after that the port is part of the contract.
                bind_failures += 1
                self.port = None
                continue
            if "is still in use" in new_log and time_left:
                # After kill(), backends of the old postmaster may hold shared memory briefly.
                time.sleep(0.2)
                continue
            raise PostgresServerError(
                f"PostgreSQL did not start on {self.host}:{self.port}: {failure}\n"
                f"--- {self.log_path}, this attempt ---\n"
                + "\n".join(new_log.splitlines()[-30:])
            )
        if not self._initialized:
            self._execute_admin("CREATE DATABASE hpo")
            self._initialized = True
        atexit.register(self._atexit)
        return self

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Shut down as ``pg_ctl stop -m MODE`` would (smart, fast or immediate) and wait."""
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"mode must be one of {sorted(_STOP_SIGNALS)}, got {mode!r}")
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        os.kill(proc.pid, _STOP_SIGNALS[mode])
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_postmaster_and_children()
            raise PostgresServerError(
                f"PostgreSQL did not stop ({mode}) within {timeout:g} s and was killed\n"
                f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
            ) from None
        finally:
            self._proc = None

    def restart(self, mode: str = "fast") -> PostgresServer:
        """Stop and start again: same port, password and data."""
        self.stop(mode)
        return self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends then exit on their own.

        Returns once they are gone, so that ``start()`` can follow at once (it runs crash
        recovery). Committed data survives: only fsync is off, not synchronous_commit.
        """
        if self.is_running:
            self._kill_postmaster_and_children(grace=10.0)
        self._proc = None

    def close(self) -> None:
        """Stop the server (whatever it takes) and delete its directory."""
        atexit.unregister(self._atexit)
        try:
            if self.is_running:
                with contextlib.suppress(PostgresServerError):
                    self.stop("fast", timeout=30.0)
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                self.base_dir = None
            self._initialized = False
            self.port = None

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            self.close()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- databases ------------------------------------------------------------------------

    def connect(self, dbname: str = "hpo", **kwargs: Any) -> Any:
        """A psycopg2 connection to ``dbname`` over TCP with the password."""
        import psycopg2

        kwargs.setdefault("connect_timeout", 5)
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            **kwargs,
        )

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self._check_db_name(name)
        self._execute_admin(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        self._check_db_name(name)
        self._execute_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @staticmethod
    def _check_db_name(name: str) -> None:
        if not _DB_NAME.match(name) or name in ("postgres", "template0", "template1"):
            raise ValueError(
                "database name must be 1-63 characters of a-z, 0-9 and _, not starting with a "
                f"digit, and not a system database; got {name!r}"
            )

    def _execute_admin(self, statement: str) -> None:
        conn = self.connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, PostgresServerError):
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- internals ------------------------------------------------------------------------

    def _run_as_kwargs(self) -> dict[str, Any]:
        """Popen arguments that run a server binary as a user it accepts.

        initdb and postgres refuse to run as root: as root, run them as ``postgres``.
        """
        if self._run_as is None:
            if os.geteuid() != 0:
                self._run_as = {}
            else:
                import pwd

                try:
                    entry = pwd.getpwnam("postgres")
                except KeyError:
                    raise PostgresServerError(
                        "running as root, and PostgreSQL refuses to: there is no 'postgres' "
                        "user to run it as (installing the postgresql package creates one)"
                    ) from None
                self._run_as = {
                    "user": entry.pw_uid,
                    "group": entry.pw_gid,
                    "extra_groups": [],
                }
        return self._run_as

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _run_binary(self, args: Sequence[str], what: str) -> None:
        try:
            result = subprocess.run(
                [str(self.bin_dir / args[0]), *args[1:]],
                cwd=self.base_dir,
                env=self._server_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                **self._run_as_kwargs(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresServerError(f"{what} failed: {exc}") from exc
        if result.returncode != 0:
            raise PostgresServerError(
                f"{what} failed with exit status {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )

    def _init_cluster(self) -> None:
        run_as = self._run_as_kwargs()
        base = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
        self.base_dir = base
        try:
            self.socket_dir.mkdir()
            pwfile = base / "pwfile"
            pwfile.write_text(self.password + "\n")
            if run_as:
                for path in (base, self.socket_dir, pwfile):
                    os.chown(path, run_as["user"], run_as["group"])
            self._run_binary(
                [
                    "initdb",
                    f"--pgdata={self.data_dir}",
                    f"--username={self.user}",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                "initdb",
            )
            pwfile.unlink()
            # Password logins only, on the socket and on 127.0.0.1; nothing else is accepted.
            (self.data_dir / "pg_hba.conf").write_text(
                "# written by tests/postgres.py\n"
                "local all all scram-sha-256\n"
                "host  all all 127.0.0.1/32 scram-sha-256\n"
            )
            settings: dict[str, Any] = {
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": str(self.socket_dir),
                "password_encryption": "scram-sha-256",
                "fsync": "off",
                "max_connections": 200,
                "shared_buffers": "32MB",
                "logging_collector": "off",
                "log_min_messages": "warning",
            }
            settings.update(self._settings)
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write("\n# written by tests/postgres.py\n")
                for key, value in settings.items():
                    conf.write(f"{key} = '{value}'\n")
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            self.base_dir = None
            raise

    def _launch_and_wait(self, deadline: float) -> str | None:
        """Start the postmaster and wait until it accepts a login; None, or why not."""
        import psycopg2

        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                cwd=self.base_dir,
                env=self._server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
                **self._run_as_kwargs(),
            )
        last_error = "timed out"
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                return f"the server exited with status {code}"
            try:
                self.connect("postgres", connect_timeout=2).close()
                return None
            except psycopg2.OperationalError as exc:
                last_error = str(exc).strip() or last_error
            if time.monotonic() >= deadline:
                self._kill_postmaster_and_children()
                self._proc = None
                return f"no login within {self.startup_timeout:g} s (last error: {last_error})"
            time.sleep(0.05)

    def _kill_postmaster_and_children(self, grace: float = 5.0) -> None:
        """SIGKILL the postmaster; wait for its children to exit, SIGKILL those that don't."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        children = _children_of(proc.pid)
        proc.kill()
        proc.wait()
        if not _wait_gone(children, grace):
            for pid in children:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(children, 5.0)


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in pids):
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)
    return True


def _main(argv: Sequence[str]) -> int:
    import sys

    if list(argv) != ["--bin-dir"]:
        print("usage: python3 tests/postgres.py --bin-dir", file=sys.stderr)
        return 2
    try:
        found = find_pg_bin_dir()
    except PostgresServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if found is None:
        print("PostgreSQL server binaries (initdb, postgres) not found", file=sys.stderr)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
