"""``hpo dashboard``: the WSGI app in-process, its login, the loopback rule, and a real socket."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli

SPEC = "name: t\nbudget: {n_trials: 2}\nmodel: {name: mlp, n_layers: 1, width: 8}\ntrain: {epochs: 2}\n"
USER, PASSWORD = "ana", "s3cret:with-colon"


def png_bytes(width: int = 96, height: int = 64) -> bytes:
    """A small gradient PNG, written by hand so the test needs no imaging library."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (255 * x // width, 80, 255 * y // height))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@dataclass
class DashboardStudy:
    journal: Path
    study_id: int
    trial_id: int
    trial_number: int
    artifact_id: str


def make_study(base: Path) -> DashboardStudy:
    """Study ``t`` run by the CLI (per-epoch intermediate values), plus a PNG on trial 0."""
    import optuna

    from hpo.artifacts.store import study_store
    from hpo.storage.urls import resolve_storage
    from hpo.study.studies import load_study

    journal = base / "hpo-studies.journal"
    spec = base / "t.yaml"
    spec.write_text(SPEC)
    runner = CliRunner()
    for args in (["study", "create", str(spec)], ["worker", "t", "--rank", "0", "--quiet"]):
        result = runner.invoke(cli, [*args, "--storage", str(journal)])
        assert result.exit_code == 0, result.output
    study = load_study("t", resolve_storage(str(journal))).study
    assert all(t.intermediate_values for t in study.get_trials(deepcopy=False)), \
        "the worker should report per-epoch values"
    # Optuna 5 refuses artifacts on finished trials, so a file is uploaded while its trial
    # runs, as a worker would: one more trial, told after its upload.
    image = base / "curve.png"
    image.write_bytes(png_bytes())
    trial = study.ask()
    for epoch, value in enumerate((0.5, 0.7)):
        trial.report(value, epoch)
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=study_store(study), file_path=str(image), study_or_trial=trial,
        mimetype="image/png",
    )
    study.tell(trial, 0.7)
    return DashboardStudy(journal, study._study_id, trial._trial_id, trial.number, artifact_id)


@pytest.fixture(scope="module")
def dash_study(tmp_path_factory: pytest.TempPathFactory) -> DashboardStudy:
    return make_study(tmp_path_factory.mktemp("dashboard"))


def call(app: Any, path: str, auth: str | None = None) -> tuple[str, dict[str, str], bytes]:
    """One request to a WSGI app in-process."""
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    if auth is not None:
        environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(auth.encode()).decode()
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(b"")
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def make_app(study: DashboardStudy, credentials: Any = None) -> Any:
    from hpo.results.dashboard import create_app
    from hpo.storage.urls import resolve_storage

    return create_app(resolve_storage(str(study.journal)), credentials)


def test_without_auth_the_api_lists_the_study_and_serves_its_artifact(dash_study):
    app = make_app(dash_study)
    status, _, body = call(app, "/api/studies")
    assert status.startswith("200")
    assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["t"]
    status, _, body = call(app, f"/api/studies/{dash_study.study_id}")
    trials = json.loads(body)["trials"]
    assert len(trials) == 3 and all(t["intermediate_values"] for t in trials)
    assert [a["artifact_id"] for a in trials[2]["artifacts"]] == [dash_study.artifact_id]
    status, headers, body = call(
        app, f"/artifacts/{dash_study.study_id}/{dash_study.trial_id}/{dash_study.artifact_id}")
    assert status.startswith("200") and headers["Content-Type"] == "image/png"
    assert body == png_bytes()


def test_with_auth_requests_need_the_right_credentials(dash_study):
    from hpo.results.dashboard import Credentials

    app = make_app(dash_study, Credentials(USER, PASSWORD))
    for auth in (None, f"{USER}:wrong", f"bob:{PASSWORD}", USER):
        status, headers, body = call(app, "/api/studies", auth)
        assert status == "401 Unauthorized", auth
        assert headers["WWW-Authenticate"].startswith('Basic realm="hpo"')
        assert PASSWORD.encode() not in body
    status, _, body = call(app, "/api/studies", f"{USER}:{PASSWORD}")
    assert status.startswith("200") and json.loads(body)["study_summaries"]


def test_a_garbled_authorization_header_is_refused():
    from hpo.results.dashboard import BasicAuth, Credentials

    app = BasicAuth(lambda environ, start: [b"in"], Credentials(USER, PASSWORD))
    for header in ("Basic !!!", "Bearer abc", "Basic", ""):
        status, _, _ = call(app, "/", None) if not header else _raw(app, header)
        assert status.startswith("401"), header


def _raw(app: Any, header: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"HTTP_AUTHORIZATION": header}
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}
    body = b"".join(app(environ, lambda status, headers, exc=None: seen.update(status=status)))
    return seen["status"], {}, body


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org", ""])
def test_a_non_loopback_host_without_auth_is_refused(host, monkeypatch, tmp_path):
    monkeypatch.delenv("HPO_DASHBOARD_AUTH", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["dashboard", "--host", host])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: --host {host} would expose the dashboard, which has no authentication and can "
        "delete studies, to the network; add --auth USER:PASSWORD (or --auth-file, or "
        "$HPO_DASHBOARD_AUTH)\n"
    )
    assert not (tmp_path / "hpo-studies.journal").exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "localhost", "LOCALHOST"])
def test_loopback_hosts_need_no_auth(host):
    from hpo.results.dashboard import check_exposure, is_loopback

    assert is_loopback(host)
    check_exposure(host, None)


@pytest.mark.parametrize("value", ["nopassword", ":pw", "user:", ""])
def test_malformed_credentials_are_refused_without_echoing_them(value, monkeypatch, tmp_path):
    monkeypatch.setenv("HPO_DASHBOARD_AUTH", value or "x")
    if not value:
        monkeypatch.delenv("HPO_DASHBOARD_AUTH")
        (tmp_path / "auth").write_text("")
        args = ["--auth-file", str(tmp_path / "auth")]
        source = f"the first line of {tmp_path / 'auth'}"
    else:
        args, source = [], "$HPO_DASHBOARD_AUTH"
    result = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0", *args])
    assert result.exit_code == 2
    assert result.output == f"Error: {source} must be USER:PASSWORD with a non-empty user and password\n"


def test_a_missing_embedded_store_is_not_created(monkeypatch, tmp_path):
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["dashboard"])
    assert result.exit_code == 2
    journal = tmp_path / "hpo-studies.journal"
    assert result.output.splitlines()[-1] == (
        f"Error: {journal} does not exist: create a study first (hpo study create SPEC), "
        "or point --storage (or $HPO_STORAGE) at your studies"
    )
    assert not journal.exists()


# -- a real server on a loopback socket -------------------------------------------------------


class Server:
    """``hpo dashboard`` in a subprocess on a free port; ``url`` is what it says to open."""

    def __init__(self, study: DashboardStudy, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpo", "dashboard", "--storage", str(study.journal), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.match(r"Open (http://\S+)/dashboard", line)
            if match:
                self.base = match.group(1)
                return
        self.stop()
        raise AssertionError(f"dashboard did not start: {self.lines} {self.proc.stderr.read()}")

    def get(self, path: str, auth: str | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path)
        if auth is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def stop(self) -> str:
        """Stop it (SIGINT, as Ctrl-C) and return everything it printed."""
        import signal

        if hasattr(self, "output"):
            return self.output
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out, err = self.proc.communicate()
        self.output = "".join(self.lines) + out + err
        return self.output


@pytest.mark.subprocess
def test_over_a_loopback_socket_without_auth(dash_study):
    server = Server(dash_study)
    try:
        assert server.base.startswith("http://127.0.0.1:")
        status, _, body = server.get("/api/studies")
        assert status == 200 and json.loads(body)["study_summaries"][0]["study_name"] == "t"
        status, _, body = server.get("/dashboard")
        assert status == 200 and b"<html" in body.lower()
    finally:
        output = server.stop()
    assert f"Serving optuna-dashboard for {dash_study.journal}\n" in output
    assert "GET /api/studies" not in output  # quiet access log by default


@pytest.mark.subprocess
def test_over_a_socket_with_auth_from_the_environment(dash_study):
    server = Server(dash_study, "--host", "0.0.0.0", env={"HPO_DASHBOARD_AUTH": f"{USER}:{PASSWORD}"})
    try:
        assert server.base.startswith("http://0.0.0.0:")
        server.base = server.base.replace("0.0.0.0", "127.0.0.1")
        status, headers, _ = server.get("/api/studies")
        assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="hpo"')
        assert server.get("/dashboard", f"{USER}:nope")[0] == 401
        status, _, body = server.get("/api/studies", f"{USER}:{PASSWORD}")
        assert status == 200 and json.loads(body)["study_summaries"]
        artifact = f"/artifacts/{dash_study.study_id}/{dash_study.trial_id}/{dash_study.artifact_id}"
        assert server.get(artifact)[0] == 401
        assert server.get(artifact, f"{USER}:{PASSWORD}")[2] == png_bytes()
    finally:
        output = server.stop()
    assert f"(HTTP Basic authentication, user {USER})" in output
    assert PASSWORD not in output and "s3cret" not in output


def test_artifacts_of_studies_with_different_stores_are_all_served(tmp_path):
    """Two studies, two artifact directories, one dashboard: each artifact is found."""
    import optuna

    from hpo.artifacts.store import open_store, record_store
    from hpo.results.dashboard import create_app
    from hpo.storage.urls import open_storage, resolve_storage

    target = resolve_storage(str(tmp_path / "s.journal"))
    storage = open_storage(target)
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(8, 8))
    served = []
    for name in ("a", "b"):
        study = optuna.create_study(study_name=name, storage=storage)
        location = {"kind": "file", "path": str(tmp_path / f"artifacts-{name}")}
        record_store(study, location)
        trial = study.ask()
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=open_store(location), file_path=str(image), study_or_trial=trial)
        study.tell(trial, 1.0)
        served.append(f"/artifacts/{study._study_id}/{trial._trial_id}/{artifact_id}")
    app = create_app(target)
    for path in served:
        status, _, body = call(app, path)
        assert status.startswith("200") and body == png_bytes(8, 8), path


# -- host names and origins (DNS rebinding, cross-site requests) ------------------------------

PORT = "8080"  # the port the in-process requests claim the server listens on


def request(app: Any, method: str, path: str, *, host: str | None = f"127.0.0.1:{PORT}",
            origin: str | None = None, referer: str | None = None) -> tuple[str, bytes]:
    """One request to a WSGI app in-process, with the headers a browser (or a page using DNS
    rebinding in it) would send; ``host=None`` leaves the Host header out (HTTP/1.0)."""
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method}
    setup_testing_defaults(environ)
    environ.pop("HTTP_HOST", None)
    environ["SERVER_PORT"] = PORT
    environ["wsgi.input"] = io.BytesIO(b"")
    for key, value in (("HTTP_HOST", host), ("HTTP_ORIGIN", origin), ("HTTP_REFERER", referer)):
        if value is not None:
            environ[key] = value
    seen: dict[str, Any] = {}
    body = b"".join(app(environ, lambda status, headers, exc=None: seen.update(status=status)))
    return seen["status"], body


def study_names(journal: Path) -> list[str]:
    import optuna

    from hpo.storage.urls import open_storage, resolve_storage

    return [s.study_name for s in optuna.get_all_study_summaries(open_storage(resolve_storage(str(journal))))]


@pytest.fixture
def deletable(tmp_path: Path) -> DashboardStudy:
    """A study of its own, for the tests that try to delete it."""
    import optuna

    from hpo.storage.urls import open_storage, resolve_storage

    journal = tmp_path / "hpo-studies.journal"
    study = optuna.create_study(study_name="t", storage=open_storage(resolve_storage(str(journal))))
    return DashboardStudy(journal, study._study_id, -1, -1, "")


def test_a_dns_rebinding_page_can_neither_read_nor_delete(deletable):
    """The attack of issue 12: attacker.example resolves to 127.0.0.1, so the browser sends
    the attacker's name as Host and as Origin."""
    app = make_app(deletable)
    status, body = request(app, "GET", "/api/studies", host="attacker.example")
    assert status == "421 Misdirected Request" and b"study" not in body
    status, _ = request(app, "DELETE", f"/api/studies/{deletable.study_id}",
                        host=f"attacker.example:{PORT}", origin=f"http://attacker.example:{PORT}")
    assert status == "421 Misdirected Request"
    assert study_names(deletable.journal) == ["t"]


@pytest.mark.parametrize("host", ["127.0.0.1", f"127.0.0.1:{PORT}", "localhost", f"LOCALHOST:{PORT}",
                                  "[::1]", f"[::1]:{PORT}"])
def test_loopback_names_are_answered_with_and_without_the_port(dash_study, host):
    status, body = request(make_app(dash_study), "GET", "/api/studies", host=host)
    assert status.startswith("200") and json.loads(body)["study_summaries"]


@pytest.mark.parametrize("host", [
    "attacker.example", f"127.0.0.1:{int(PORT) + 1}", f"localhost.attacker.example:{PORT}",
    f"127.0.0.1.nip.io:{PORT}", f"127.0.0.1:{PORT}@attacker.example", "127.0.0.2", "::1", "",
])
def test_other_host_names_are_refused(dash_study, host):
    status, _ = request(make_app(dash_study), "GET", "/api/studies", host=host)
    assert status in ("421 Misdirected Request", "400 Bad Request"), host


def test_a_state_changing_request_needs_an_origin_of_the_dashboard(deletable):
    app = make_app(deletable)
    path = f"/api/studies/{deletable.study_id}"
    assert request(app, "DELETE", path)[0] == "403 Forbidden"  # no Origin, no Referer
    assert request(app, "DELETE", path, origin="http://attacker.example")[0] == "403 Forbidden"
    assert study_names(deletable.journal) == ["t"]
    status, _ = request(app, "DELETE", path, origin=f"http://127.0.0.1:{PORT}")
    assert status.startswith("20")  # the dashboard's own page may delete
    assert study_names(deletable.journal) == []


def test_a_referer_of_the_dashboard_stands_in_for_a_missing_origin(deletable):
    status, _ = request(make_app(deletable), "DELETE", f"/api/studies/{deletable.study_id}",
                        referer=f"http://localhost:{PORT}/dashboard/studies/{deletable.study_id}")
    assert status.startswith("20") and study_names(deletable.journal) == []


def test_configured_host_names_are_answered_too(deletable):
    from hpo.results.dashboard import allowed_host_names, create_app
    from hpo.storage.urls import resolve_storage

    allowed = allowed_host_names("0.0.0.0", ["hpo.example.org", "proxy.example.org:8443"])
    assert "0.0.0.0" not in allowed  # a wildcard is no name a client uses
    app = create_app(resolve_storage(str(deletable.journal)), allowed_hosts=allowed)
    # A Host without a port is what a reverse proxy forwards: answered for every allowed name.
    for host in ("hpo.example.org", f"hpo.example.org:{PORT}", "proxy.example.org:8443", "localhost",
                 "proxy.example.org"):
        assert request(app, "GET", "/api/studies", host=host)[0].startswith("200"), host
    for host in (f"proxy.example.org:{PORT}", "hpo.example.org:8443", "attacker.example"):
        assert request(app, "GET", "/api/studies", host=host)[0] == "421 Misdirected Request", host
    # An Origin without a port is the scheme's default port: the proxy's page at https://...
    path = f"/api/studies/{deletable.study_id}/note"
    assert request(app, "PUT", path, origin="https://proxy.example.org:8443")[0] != "403 Forbidden"
    assert request(app, "PUT", path, origin="https://proxy.example.org")[0] == "403 Forbidden"
    assert allowed_host_names("192.168.1.5") >= {"192.168.1.5", "127.0.0.1", "localhost", "[::1]"}
    assert "[fe80::1]" in allowed_host_names("fe80::1")


def test_the_login_is_asked_for_only_on_an_allowed_host(dash_study):
    from hpo.results.dashboard import Credentials

    app = make_app(dash_study, Credentials(USER, PASSWORD))
    assert request(app, "GET", "/api/studies", host="attacker.example")[0] == "421 Misdirected Request"
    assert request(app, "GET", "/api/studies")[0] == "401 Unauthorized"
    assert call(app, "/api/studies", f"{USER}:{PASSWORD}")[0].startswith("200")


@pytest.mark.parametrize("name", ["", "a b", "http://x", "x/y", "*", "x@y", "x:port"])
def test_a_malformed_allowed_host_is_refused(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["dashboard", "--allowed-host", name])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: --allowed-host {name!r} is not a host name (NAME, NAME:PORT, or [IPV6]:PORT)")
    assert not (tmp_path / "hpo-studies.journal").exists()


def raw_request(base: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A request with exactly these headers (urllib would set Host itself)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.subprocess
def test_over_a_socket_a_foreign_host_is_refused_and_an_allowed_one_answered(deletable):
    server = Server(deletable, "--allowed-host", "hpo.test")
    try:
        port = server.base.rsplit(":", 1)[1]
        path = f"/api/studies/{deletable.study_id}"
        rebinding = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
        assert raw_request(server.base, "GET", "/api/studies", rebinding)[0] == 421
        assert raw_request(server.base, "DELETE", path, rebinding)[0] == 421
        assert raw_request(server.base, "DELETE", path, {"Host": f"hpo.test:{port}"})[0] == 403
        assert study_names(deletable.journal) == ["t"]
        status, body = raw_request(server.base, "GET", "/api/studies", {"Host": f"hpo.test:{port}"})
        assert status == 200 and json.loads(body)["study_summaries"][0]["study_name"] == "t"
    finally:
        server.stop()
