"""Hostile requests to ``hpo dashboard``: foreign or missing Host headers (DNS rebinding),
state-changing requests without an Origin of the dashboard's own (cross-site requests),
and oversized requests. Each is answered with a short refusal before optuna-dashboard sees
it, and the storage is byte for byte what it was.

The requests go to the WSGI app in-process with a crafted environ (as the server would
build it for a dashboard listening on ``PORT``); the last cases go through a real socket.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from hpo.results.dashboard import MAX_TARGET_LENGTH
from tests.badinput import snapshot, within_bounds

PORT = "8080"
OURS = f"http://127.0.0.1:{PORT}"  # the Origin of the dashboard's own page

# Every kind of route that changes something, with a body that would be accepted.
CHANGES = [
    ("POST", "/api/studies", {"study_name": "evil", "directions": ["minimize"]}),
    ("POST", "/api/studies/0/rename", {"study_name": "evil"}),
    ("DELETE", "/api/studies/0", None),
    ("PUT", "/api/studies/0/note", {"version": 1, "body": "evil"}),
    ("POST", "/api/trials/0/tell", {"state": "Fail"}),
    ("POST", "/api/trials/0/user-attrs", {"user_attrs": {"evil": 1}}),
    ("PATCH", "/api/studies/0", {"study_name": "evil"}),
]


@dataclass
class Dashboard:
    app: Any
    journal: Path

    def request(self, method: str, path: str, body: Any = None, **headers: str | None) -> tuple[str, bytes]:
        """One request; header keywords as in the environ (``HTTP_HOST=None`` leaves Host out)."""
        data = b"" if body is None else json.dumps(body).encode()
        environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method}
        setup_testing_defaults(environ)
        environ.update(SERVER_PORT=PORT, HTTP_HOST=f"127.0.0.1:{PORT}", CONTENT_LENGTH=str(len(data)),
                       CONTENT_TYPE="application/json", **{"wsgi.input": io.BytesIO(data)})
        for key, value in headers.items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        seen: dict[str, str] = {}
        with within_bounds(seconds=20, megabytes=100):
            answer = b"".join(self.app(environ, lambda status, head, exc=None: seen.update(status=status)))
        return seen["status"], answer

    def study_names(self) -> list[str]:
        status, body = self.request("GET", "/api/studies")
        assert status.startswith("200"), status
        return [s["study_name"] for s in json.loads(body)["study_summaries"]]


@pytest.fixture
def dashboard(tmp_path: Path) -> Dashboard:
    """Study ``t`` (id 0) with one finished trial (id 0), and the dashboard's app on it."""
    import optuna

    from hpo.results.dashboard import create_app
    from hpo.storage.urls import open_storage, resolve_storage

    journal = tmp_path / "hpo-studies.journal"
    target = resolve_storage(str(journal))
    study = optuna.create_study(study_name="t", storage=open_storage(target))
    study.enqueue_trial({})
    study.optimize(lambda trial: 1.0, n_trials=1)
    return Dashboard(create_app(target), journal)


def assert_unchanged(dashboard: Dashboard, before: dict[str, str]) -> None:
    assert snapshot(dashboard.journal) == before
    assert dashboard.study_names() == ["t"]


# -- foreign and missing Host headers ---------------------------------------------------------


@pytest.mark.parametrize("host", [
    "attacker.example",  # DNS rebinding: the attacker's name resolved to 127.0.0.1
    f"attacker.example:{PORT}",
    f"127.0.0.1:{int(PORT) + 1}",  # a port this dashboard does not listen on
    f"localhost:{PORT}0",
    f"localhost.attacker.example:{PORT}",
    f"127.0.0.1.nip.io:{PORT}",
    f"127.0.0.1:{PORT}@attacker.example",
    f"127.0.0.1:{PORT}\r\nX-Injected: 1",
    f"127.0.0.1 :{PORT}",
    "0.0.0.0",
    "a" * 100_000,
])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_foreign_host_is_misdirected(dashboard, host, method):
    before = snapshot(dashboard.journal)
    status, body = dashboard.request(method, "/api/studies/0", HTTP_HOST=host, HTTP_ORIGIN=f"http://{host}")
    assert status == "421 Misdirected Request"
    assert body.startswith(b"Unknown host name") and len(body) < 200  # the name is not echoed
    assert_unchanged(dashboard, before)


@pytest.mark.parametrize("host", [None, ""])
def test_a_request_without_a_host_header_is_refused(dashboard, host):
    """HTTP/1.0 lets a client leave Host out; then nothing says which name it meant."""
    before = snapshot(dashboard.journal)
    assert dashboard.request("GET", "/api/studies", HTTP_HOST=host) == ("400 Bad Request",
                                                                       b"A Host header is required.\n")
    assert dashboard.request("DELETE", "/api/studies/0", HTTP_HOST=host, HTTP_ORIGIN=OURS)[0] == "400 Bad Request"
    assert_unchanged(dashboard, before)


# -- state-changing requests from elsewhere ---------------------------------------------------


ELSEWHERE = {
    "no Origin, no Referer": {},
    "a foreign Origin": {"HTTP_ORIGIN": "http://attacker.example"},
    "Origin: null (a sandboxed frame, a data: URL)": {"HTTP_ORIGIN": "null"},
    "an empty Origin": {"HTTP_ORIGIN": ""},
    "our port on another host": {"HTTP_ORIGIN": f"http://attacker.example:{PORT}"},
    "our host on another port": {"HTTP_ORIGIN": f"http://127.0.0.1:{int(PORT) + 1}"},
    "our host with no port (port 80)": {"HTTP_ORIGIN": "http://127.0.0.1"},
    "userinfo that looks like us": {"HTTP_ORIGIN": f"http://127.0.0.1:{PORT}@attacker.example"},
    "a suffix of our name": {"HTTP_ORIGIN": f"http://127.0.0.1:{PORT}.attacker.example"},
    "another scheme": {"HTTP_ORIGIN": "chrome-extension://abcdefghijklmnop"},
    "a file page": {"HTTP_ORIGIN": "file://"},
    "an unbalanced IPv6 bracket": {"HTTP_ORIGIN": "http://[::1"},
    "a Referer from elsewhere": {"HTTP_REFERER": "http://attacker.example/page"},
    "a foreign Origin beside our Referer": {"HTTP_ORIGIN": "http://attacker.example",
                                            "HTTP_REFERER": f"{OURS}/dashboard"},
}


@pytest.mark.parametrize("method, path, body", CHANGES, ids=[f"{m} {p}" for m, p, _ in CHANGES])
@pytest.mark.parametrize("case", list(ELSEWHERE))
def test_a_state_changing_request_from_elsewhere_is_forbidden(dashboard, method, path, body, case):
    before = snapshot(dashboard.journal)
    status, answer = dashboard.request(method, path, body, **ELSEWHERE[case])
    assert status == "403 Forbidden"
    assert answer.startswith(b"Refused: a request that changes something must come from the dashboard")
    assert_unchanged(dashboard, before)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_need_no_origin(dashboard, method):
    assert not dashboard.request(method, "/api/studies")[0].startswith(("403", "421", "400"))


def test_the_same_requests_from_the_dashboards_own_page_do_change_the_study(dashboard):
    """Guard for the cases above: with our Origin the requests are real, and do their work."""
    status, _ = dashboard.request("POST", "/api/studies/0/rename", {"study_name": "renamed"}, HTTP_ORIGIN=OURS)
    assert status.startswith("20"), status
    assert dashboard.study_names() == ["renamed"]
    status, _ = dashboard.request("POST", "/api/studies", CHANGES[0][2], HTTP_REFERER=f"{OURS}/dashboard")
    assert status.startswith("20"), status
    assert sorted(dashboard.study_names()) == ["evil", "renamed"]


@pytest.mark.parametrize("path, query", [
    ("/api/studies/" + "9" * 100_000, ""),  # once crashed the artifact routing: int() of 100,000 digits
    ("/api/studies/" + "9" * 4_000, ""),  # too many digits for int(), short enough to reach the app
    ("/api/studies/0/" + "a/" * 50_000, ""),
    ("/api/studies", "x=" + "a" * 100_000),
])
def test_a_very_long_url_is_a_short_refusal(dashboard, path, query):
    before = snapshot(dashboard.journal)
    # (optuna-dashboard answers DELETE of a study id it does not know with a 500: not tried here)
    methods = ("GET", "DELETE") if len(path) + len(query) > MAX_TARGET_LENGTH else ("GET",)
    for method in methods:
        status, body = dashboard.request(method, path, HTTP_ORIGIN=OURS, QUERY_STRING=query)
        assert status.startswith(("400", "404", "414")) and len(body) < 10_000, (status, len(body))
    assert_unchanged(dashboard, before)


# -- through a real socket ----------------------------------------------------------------------


def send(port: int, raw: bytes) -> bytes:
    """``raw`` bytes to the server, and everything it answers."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.subprocess
def test_over_a_socket_hostile_requests_are_refused_and_the_server_keeps_answering(tmp_path):
    import optuna

    from hpo.storage.urls import open_storage, resolve_storage
    from tests.results.test_dashboard import DashboardStudy, Server

    journal = tmp_path / "hpo-studies.journal"
    optuna.create_study(study_name="t", storage=open_storage(resolve_storage(str(journal))))
    before = snapshot(journal)
    server = Server(DashboardStudy(journal, 0, -1, -1, ""))
    try:
        port = int(server.base.rsplit(":", 1)[1])
        answers = {
            "HTTP/1.0 without Host": send(port, b"DELETE /api/studies/0 HTTP/1.0\r\n\r\n"),
            "rebinding": send(port, f"DELETE /api/studies/0 HTTP/1.1\r\nHost: evil.example:{port}\r\n"
                                    f"Origin: http://evil.example:{port}\r\nConnection: close\r\n\r\n".encode()),
            "no Origin": send(port, f"DELETE /api/studies/0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                                    "Connection: close\r\n\r\n".encode()),
            "a 100 kB request line": send(port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"),
        }
        assert answers["HTTP/1.0 without Host"].startswith(b"HTTP/1.0 400 ")
        assert answers["rebinding"].startswith(b"HTTP/1.0 421 ")
        assert answers["no Origin"].startswith(b"HTTP/1.0 403 ")
        assert answers["a 100 kB request line"].startswith(b"HTTP/1.0 414 ")
        assert server.get("/api/studies")[0] == 200  # still serving
    finally:
        output = server.stop()
    assert "Traceback" not in output
    assert snapshot(journal) == before
