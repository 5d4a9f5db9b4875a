"""The one place that knows how to keep a storage URL's password out of every output.

Every password seen in a URL is remembered, so that errors and log records from drivers and
Optuna, which may quote connection strings, can be scrubbed of it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, unquote

_secrets: set[str] = set()


# A password sits either in the authority (user:PASSWORD@host) or, as libpq also
# accepts, in the query string (?password=PASSWORD). The user name ends at the first ':'
# (as SQLAlchemy reads it) and the password at the LAST '@' of the URL: one written with an
# unencoded '@' (u:pa@ss@host) is hidden whole, not up to its first '@'. The query's password
# goes first, so that an '@' in it does not count as the end of the userinfo.
_AUTHORITY_PASSWORD = re.compile(r"(://[^:/]*:)(.*)@(?=[^@]*$)", re.DOTALL)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """``postgresql://hpo:secret@db/hpo`` -> ``postgresql://hpo:***@db/hpo``."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    return _AUTHORITY_PASSWORD.sub(r"\1***@", url)


def passwords_in(url: str) -> list[str]:
    """Every password ``url`` holds, as written (the parts ``redact`` replaces)."""
    found = [match.group(2) for match in _QUERY_PASSWORD.finditer(url)]
    found += [match.group(2) for match in _AUTHORITY_PASSWORD.finditer(_QUERY_PASSWORD.sub(r"\1***", url))]
    return [password for password in found if password and password != "***"]


def remember_password(url: str) -> None:
    for password in passwords_in(url):
        _secrets.update({password, unquote(password), quote(unquote(password), safe="")})


def scrub(text: str) -> str:
    """Replace every password seen in a storage URL by ``***`` (for errors and logs)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


class ScrubSecretsFilter(logging.Filter):
    """Logging filter: drivers and Optuna may log URLs or connection strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
