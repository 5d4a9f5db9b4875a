"""Checks of a database URL before anything connects with it.

A URL that SQLAlchemy or libpq would misread must not reach them: ``postgresql://u:pa@ss@db/x``
is read as user ``u``, password ``pa`` and host ``ss@db``, so part of the password would go to
DNS as a host name and come back quoted in the driver's error. Each mistake found here is a
``UsageError`` (exit 2) that names the URL with its password hidden, raised before any
connection, DNS lookup or file is made.
"""

from __future__ import annotations

import re
from pathlib import Path

from hpo.errors import UsageError
from hpo.storage.secrets import redact

# Real URLs are short; a longer "URL" is a file's contents or an accident, and would be
# printed back whole in the error.
MAX_URL_LENGTH = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_PERCENT_ENCODING = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODING = "(and ':' as %3A, '/' as %2F, '%' as %25)"
SERVER_SCHEMES = ("postgresql", "mysql")


def check_url(url: str) -> None:
    """What no storage URL may hold, whatever its scheme: checked before the scheme is."""
    if len(url) > MAX_URL_LENGTH:
        raise UsageError(f"the storage URL is {len(url):,} characters long (at most {MAX_URL_LENGTH:,})")
    control = _CONTROL.search(url)
    if control:
        raise UsageError(
            f"storage URL {shown(url)} holds a control character ({control.group()!r} at position "
            f"{control.start()}): a line break pasted with it?"
        )


def check_rdb_url(url: str, scheme: str) -> None:
    """The userinfo, then the parts of a server URL or of a SQLite one."""
    after = url.split("://", 1)[1]
    if after.count("@") > 1:
        raise UsageError(
            f"storage URL {shown(url)} has more than one '@': an '@' in the user name or password "
            f"must be percent-encoded as %40 {_ENCODING}, e.g. postgresql://USER:p%40ss@HOST:5432/DB"
        )
    userinfo, _, rest = after.rpartition("@")
    if _NOT_PERCENT_ENCODING.search(userinfo):
        raise UsageError(
            f"the user name or password in storage URL {shown(url)} has a '%' that starts no "
            f"percent-encoding: write '%' as %25 {_ENCODING}"
        )
    if scheme in SERVER_SCHEMES:
        _check_server_url(url, scheme, rest)
    elif scheme == "sqlite":
        _check_sqlite_url(url, after)


def _check_server_url(url: str, scheme: str, rest: str) -> None:
    """``HOST[:PORT]/DB[?QUERY]``; an empty HOST is the local server's Unix socket (libpq)."""
    location, _, path = rest.split("?", 1)[0].partition("/")
    host, port = _split_host(url, location)
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        # Without an '@' a forgotten host turns user:PASSWORD into host:port: never show it.
        where = shown(url) if port.isdigit() else shown(url).replace(f":{port}", ":***", 1)
        raise UsageError(f"the port in storage URL {where} is not a number from 1 to 65535")
    if not path:
        raise UsageError(
            f"storage URL {shown(url)} names no database (expected {scheme}://USER:PASSWORD@HOST:5432/DB)"
        )


def _split_host(url: str, location: str) -> tuple[str, str | None]:
    """``db:5432`` -> ``("db", "5432")``, ``[::1]:5432`` -> ``("[::1]", "5432")``."""
    if location.startswith("["):
        end = location.find("]")
        tail = location[end + 1:] if end >= 0 else ""
        if end < 0 or (tail and not tail.startswith(":")):
            raise UsageError(f"the host in storage URL {shown(url)} opens a '[' (an IPv6 address) it does not close")
        return location[:end + 1], tail[1:] if tail else None
    host, sep, port = location.partition(":")
    return host, port if sep else None


def _check_sqlite_url(url: str, after: str) -> None:
    """``sqlite:///FILE``: a file, not the in-memory database (gone when the command ends)
    nor a directory (SQLite's "unable to open database file")."""
    database = after.partition("/")[2].split("?", 1)[0]
    if database in ("", ":memory:"):
        raise UsageError(
            f"storage URL {shown(url)} names no database file, and an in-memory database would be "
            "gone when the command ends (expected sqlite:///FILE)"
        )
    if Path(database).expanduser().is_dir():
        raise UsageError(f"storage URL {shown(url)} names a directory, not a database file (expected sqlite:///FILE)")


def shown(url: str) -> str:
    """``url`` as an error may print it: password hidden, control characters escaped (one line)."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], redact(url))
