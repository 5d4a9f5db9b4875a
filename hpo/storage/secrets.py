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
# accepts, in the query string (?password=PASSWORD).
_AUTHORITY_PASSWORD = re.compile(r"(://[^:/@?#]*:)([^@]*)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """``postgresql://hpo:secret@db/hpo`` -> ``postgresql://hpo:***@db/hpo``."""
    url = _AUTHORITY_PASSWORD.sub(r"\1***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", url)


def remember_password(url: str) -> None:
    for pattern in (_AUTHORITY_PASSWORD, _QUERY_PASSWORD):
        for match in pattern.finditer(url):
            password = match.group(2)
            if password:
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
