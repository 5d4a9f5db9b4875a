"""``hpo dashboard``: optuna-dashboard on the study storage, with the studies' artifacts."""

from __future__ import annotations

import sys

import click

from hpo.cli.common import storage_option, storage_target


@click.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --auth: the dashboard "
              "can delete studies.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0 picks a free one).")
@click.option("--auth", metavar="USER:PASSWORD", default=None,
              help="Require HTTP Basic authentication. Prefer --auth-file or "
              "$HPO_DASHBOARD_AUTH: command lines are visible to other users.")
@click.option("--auth-file", metavar="FILE", default=None,
              help="Read USER:PASSWORD from the first line of FILE.")
@click.option("--allowed-host", "allowed_hosts", metavar="NAME", multiple=True,
              help="Also answer requests for this host name (NAME or NAME:PORT; repeatable): "
              "the name other machines or a reverse proxy use. Loopback names and --host are "
              "always answered, any other Host header gets 421 (DNS rebinding).")
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
def dashboard(storage: str | None, host: str, port: int, auth: str | None, auth_file: str | None,
              allowed_hosts: tuple[str, ...], access_log: bool) -> None:
    """Serve optuna-dashboard on the study storage, with each study's artifacts.

    Binds to 127.0.0.1 unless told otherwise. The dashboard has no authentication of its
    own and can delete studies, so --host other than loopback requires --auth, --auth-file
    or $HPO_DASHBOARD_AUTH (HTTP Basic; put TLS in front of it on untrusted networks).
    It answers only requests for its own host names (loopback, --host, --allowed-host), and
    changes studies only for requests whose Origin is one of them.

    Example: hpo dashboard --port 8080, then open http://127.0.0.1:8080/dashboard
    """
    from hpo.results.dashboard import (
        allowed_host_names,
        check_exposure,
        create_app,
        is_wildcard,
        make_dashboard_server,
        resolve_credentials,
        url_for,
    )

    credentials = resolve_credentials(auth, auth_file)
    check_exposure(host, credentials)
    names = allowed_host_names(host, allowed_hosts)
    target = storage_target(storage)
    app = create_app(target, credentials, allowed_hosts=names)
    server = make_dashboard_server(app, host, port, access_log=access_log)
    login = f" (HTTP Basic authentication, user {credentials.user})" if credentials else ""
    click.echo(f"Serving optuna-dashboard for {target.display}{login}")
    click.echo(f"Open {url_for(host, server.server_port)}  (Ctrl-C to stop)")
    if is_wildcard(host):
        click.echo(f"Answers only requests for {', '.join(sorted(names))}: add --allowed-host NAME "
                   "for each name clients use to reach this machine")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("Stopped.")
    finally:
        server.server_close()
