"""optuna-dashboard on the study storage, with each study's artifact store and optional login.

optuna-dashboard takes one artifact store, but every hpo study records its own (see
hpo.artifacts), and two studies in one storage may keep their files in different places.
``StudyArtifactStores`` is one store that routes each request to the store of the study the
request is about: every dashboard route that touches artifacts names the study in its path,
so a small WSGI wrapper notes the study id for the request and the store looks its location
up in the storage (studies created while the dashboard runs are found too).

optuna-dashboard has no authentication, and its API can delete studies and their artifacts,
so it binds to loopback by default and ``--host`` elsewhere requires a user and password.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hmac
import ipaddress
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpo.errors import UsageError
from hpo.storage.urls import StorageTarget, open_storage

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

AUTH_ENV = "HPO_DASHBOARD_AUTH"
REALM = "hpo"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# /artifacts/<study_id>/..., /api/artifacts/<study_id>/... and DELETE /api/studies/<study_id>
# (which removes the study's artifacts too): the routes that reach the artifact store.
_STUDY_IN_PATH = re.compile(r"^/(?:api/)?(?:artifacts|studies)/(\d{1,18})(?:/|$)")  # an int64 id
_current_study: contextvars.ContextVar[int | None] = contextvars.ContextVar("hpo_dashboard_study", default=None)


# -- authentication ------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:  # keep the password out of tracebacks and debug output
        return f"Credentials(user={self.user!r}, password='***')"


def parse_credentials(value: str, source: str) -> Credentials:
    """``USER:PASSWORD`` (the password may contain colons); errors never echo the value."""
    user, sep, password = value.strip("\r\n").partition(":")
    if not sep or not user or not password:
        raise UsageError(f"{source} must be USER:PASSWORD with a non-empty user and password")
    return Credentials(user, password)


def resolve_credentials(auth: str | None, auth_file: str | None) -> Credentials | None:
    """``--auth``, else ``--auth-file`` (first line), else ``$HPO_DASHBOARD_AUTH``, else None."""
    if auth and auth_file:
        raise UsageError("give --auth or --auth-file, not both")
    if auth:
        return parse_credentials(auth, "--auth")
    if auth_file:
        try:
            lines = Path(auth_file).expanduser().read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read --auth-file {auth_file}: {exc.strerror}") from None
        return parse_credentials(lines[0] if lines else "", f"the first line of {auth_file}")
    env = os.environ.get(AUTH_ENV)
    if env:
        return parse_credentials(env, f"${AUTH_ENV}")
    return None


class BasicAuth:
    """HTTP Basic authentication around a WSGI app.

    Written by hand because optuna-dashboard offers no authentication of its own, and a
    dozen lines here beat a dependency. Use it behind TLS (a reverse proxy) on untrusted
    networks: Basic credentials travel in clear text.
    """

    def __init__(self, app: WSGIApp, credentials: Credentials) -> None:
        self.app = app
        self._expected = f"{credentials.user}:{credentials.password}".encode()

    def _authorised(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        # Constant-time comparison: response times must not reveal how much matched.
        return hmac.compare_digest(given, self._expected)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self._authorised(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        body = b"Authentication required.\n"
        start_response("401 Unauthorized", [
            ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ])
        return [body]


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; anything else (0.0.0.0, a name, an address) is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, credentials: Credentials | None) -> None:
    if credentials is None and not is_loopback(host):
        raise UsageError(
            f"--host {host} would expose the dashboard, which has no authentication and can "
            "delete studies, to the network; add --auth USER:PASSWORD (or --auth-file, or "
            f"${AUTH_ENV})"
        )


# -- which requests are answered: host names and origins --------------------------------------

# The names a browser on this machine uses for a loopback-bound dashboard, as they appear in
# a Host header. A page of attacker.example whose DNS answer turns into 127.0.0.1 (DNS
# rebinding) reaches the socket too, but its requests carry Host: attacker.example.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = ("", "0.0.0.0", "::")  # bound to every interface: no name of its own
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The dashboard's own URLs are short; optuna-dashboard's error page would echo a long one.
MAX_TARGET_LENGTH = 8192
# NAME, an IPv4 address or [IPV6], with an optional :PORT: all a Host header may hold.
_AUTHORITY = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::([0-9]{1,5}))?", re.IGNORECASE)


def host_name(name: str) -> str:
    """``::1`` -> ``[::1]``, lower case: a name as it appears in a Host header."""
    name = name.strip().lower()
    return f"[{name}]" if name.count(":") >= 2 and not name.startswith("[") else name


def allowed_host_names(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The loopback names, ``bind_host`` unless it is a wildcard, and ``extra`` (NAME or
    NAME:PORT each; a name without a port is answered on the port the server listens on)."""
    names = set(LOOPBACK_NAMES)
    for name in extra:
        if _AUTHORITY.fullmatch(host_name(name)) is None:
            raise UsageError(f"--allowed-host {name!r} is not a host name (NAME, NAME:PORT, or [IPV6]:PORT)")
        names.add(host_name(name))
    if not is_wildcard(bind_host):
        names.add(host_name(bind_host))
    return frozenset(names)


def is_wildcard(host: str) -> bool:
    """Bound to every interface (``0.0.0.0``, ``::``): clients reach it by names it cannot know."""
    return host.strip("[]") in _WILDCARDS


class RequestGuard:
    """Answers only requests for the dashboard's own host names, and changes state only for
    requests from its own pages.

    In front of everything else (the login included): a page using DNS rebinding must not
    even learn that a login is asked for. Browsers send ``Origin`` with every POST, PUT,
    PATCH and DELETE, so a state-changing request without one of ours (or, failing that, a
    ``Referer``) did not come from the dashboard's page.
    """

    def __init__(self, app: WSGIApp, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        # name -> the ports it is answered on; None stands for the port the server listens on.
        self._ports: dict[str, set[int | None]] = {}
        for entry in allowed_hosts:
            name, port = _split_authority(entry) or (entry, None)
            self._ports.setdefault(name, set()).add(port)

    def is_allowed(self, authority: str, server_port: str, *, default_port: int | None = None) -> bool:
        """``authority`` (``host[:port]``, from a Host header or an Origin) names this dashboard.

        A Host header without a port is answered for any allowed name (reverse proxies send
        it so); an Origin without one means its scheme's ``default_port`` (80, 443), as
        browsers leave only those out: a page on another port is another site."""
        parts = _split_authority(authority)
        if parts is None or parts[0] not in self._ports:
            return False
        port = parts[1] if parts[1] is not None else default_port
        if port is None:
            return True
        ports = self._ports[parts[0]]
        return port in ports or (None in ports and server_port.isdigit() and port == int(server_port))

    def origin_allowed(self, environ: dict[str, Any]) -> bool:
        # Origin when sent (``null`` included, which never matches), else the Referer.
        source = environ["HTTP_ORIGIN"] if "HTTP_ORIGIN" in environ else environ.get("HTTP_REFERER", "")
        try:
            parts = urlsplit(source)
        except ValueError:  # an unbalanced [ in the netloc
            return False
        default_port = {"http": 80, "https": 443}.get(parts.scheme)
        return default_port is not None and self.is_allowed(
            parts.netloc, environ.get("SERVER_PORT", ""), default_port=default_port)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "")
        if not host:
            return _refuse(start_response, "400 Bad Request", "A Host header is required.\n")
        if not self.is_allowed(host, environ.get("SERVER_PORT", "")):
            return _refuse(start_response, "421 Misdirected Request",
                           "Unknown host name: this dashboard answers only the names it was bound to "
                           "(hpo dashboard --allowed-host NAME adds one).\n")
        if len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", "")) > MAX_TARGET_LENGTH:
            return _refuse(start_response, "414 URI Too Long", "Refused: the URL is too long.\n")
        if environ.get("REQUEST_METHOD", "GET").upper() not in _SAFE_METHODS and not self.origin_allowed(environ):
            return _refuse(start_response, "403 Forbidden",
                           "Refused: a request that changes something must come from the dashboard's "
                           "own page (its Origin header names another site, or is missing).\n")
        return self.app(environ, start_response)


def _split_authority(authority: str) -> tuple[str, int | None] | None:
    """``Localhost:8080`` -> ``("localhost", 8080)``; None unless it is all a Host may hold."""
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        return None
    return match.group(1).lower(), int(match.group(2)) if match.group(2) else None


def _refuse(start_response: Callable[..., Any], status: str, message: str) -> list[bytes]:
    body = message.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


# -- artifacts ------------------------------------------------------------------------------


class StudyArtifactStores:
    """Optuna's ArtifactStore protocol (open_reader/write/remove) over every study's store.

    The store of the request's study (see ``_STUDY_IN_PATH``) comes first; reads and
    removals then try the other stores seen so far, so an artifact is found wherever it is.
    Studies without a recorded store use ``fallback`` (where ``hpo study create`` would
    have put them).
    """

    def __init__(self, storage: BaseStorage, fallback: dict[str, str]) -> None:
        self._storage = storage
        self._fallback = fallback
        self._stores: dict[str, Any] = {}  # location key -> store
        self._lock = threading.Lock()

    def _open(self, location: dict[str, str]) -> Any:
        from hpo.artifacts.store import open_store

        key = repr(sorted(location.items()))
        with self._lock:
            if key not in self._stores:
                self._stores[key] = open_store(location)
            return self._stores[key]

    def location_of(self, study_id: int | None) -> dict[str, str]:
        from hpo.study.attrs import StudyRecord

        if study_id is not None:
            try:
                location = StudyRecord.from_attrs(self._storage.get_study_user_attrs(study_id)).artifact_store
            except KeyError:  # no such study: the dashboard answers 404 itself
                location = None
            if location:
                return location
        return self._fallback

    def _candidates(self) -> list[Any]:
        first = self._open(self.location_of(_current_study.get()))
        with self._lock:
            others = [s for s in self._stores.values() if s is not first]
        return [first, *others]

    def open_reader(self, artifact_id: str) -> BinaryIO:
        from optuna.artifacts.exceptions import ArtifactNotFound

        for store in self._candidates():
            try:
                return store.open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} not found in any study's artifact store")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._candidates()[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        for store in self._candidates():
            try:
                store.remove(artifact_id)
                return
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} not found in any study's artifact store")


def _note_study(app: WSGIApp) -> WSGIApp:
    """Tell ``StudyArtifactStores`` which study the request is about."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = _STUDY_IN_PATH.match(environ.get("PATH_INFO", ""))
        token = _current_study.set(int(match.group(1)) if match else None)
        try:
            # Artifacts stream from an open file after this returns; the store is chosen
            # while the app runs, so resetting here is safe.
            return app(environ, start_response)
        finally:
            _current_study.reset(token)

    return wrapped


# -- the app and the server -----------------------------------------------------------------


def create_app(target: StorageTarget, credentials: Credentials | None = None, *,
               allowed_hosts: frozenset[str] = frozenset(LOOPBACK_NAMES)) -> WSGIApp:
    """The dashboard's WSGI app on ``target``, behind Basic auth when ``credentials``, that
    answers only requests for ``allowed_hosts`` (see ``RequestGuard``)."""
    import optuna_dashboard

    from hpo.artifacts.store import default_location
    from hpo.study.studies import quiet_optuna

    if target.kind == "journal" and not Path(target.url).expanduser().exists():
        # A reader must not leave an empty store behind (in the wrong directory, often).
        raise UsageError(
            f"{target.display} does not exist: create a study first (hpo study create SPEC), "
            "or point --storage (or $HPO_STORAGE) at your studies"
        )
    quiet_optuna()
    storage = open_storage(target)
    stores = StudyArtifactStores(storage, default_location(target))
    app: WSGIApp = _note_study(optuna_dashboard.wsgi(storage, artifact_store=stores))
    if credentials:
        app = BasicAuth(app, credentials)
    return RequestGuard(app, allowed_hosts)


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    """The standard library's WSGI server, a thread per request, as optuna-dashboard's CLI."""

    daemon_threads = True  # the dashboard polls; open requests must not hold up Ctrl-C


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


def make_dashboard_server(app: WSGIApp, host: str, port: int, *, access_log: bool = False) -> WSGIServer:
    """Bind (port 0 picks a free one); ``server.server_port`` says which."""
    server_class: type[_ThreadedServer] = _ThreadedServer6 if ":" in host else _ThreadedServer  # ::1 is IPv6
    handler = WSGIRequestHandler if access_log else _QuietHandler
    try:
        return make_server(host.strip("[]"), port, app, server_class=server_class, handler_class=handler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def url_for(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard"
