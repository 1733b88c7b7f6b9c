"""The study's storage URL: checked before anything connects, and never shown with a secret.

A ``--storage`` URL may hold a password in two places: the user information
(``postgresql://tuner:PASSWORD@host/db``) and a query parameter (``…/db?password=PASSWORD``,
which psycopg and other drivers take). Every message and summary shows the URL through
:func:`shown_url`, which masks both, and a driver's error passes through :func:`scrub`, which
removes the secrets wherever they appear in it. The masking does not trust the URL to be well
formed: a URL without ``://``, or a password with an unencoded ``@`` (which would make the rest
of the password look like the host, and the driver would print it in "cannot resolve host …"),
is refused by :func:`check_url` before any connection is tried.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from imgcls.errors import ConfigError

__all__ = ["check_url", "scrub", "secrets", "shown_url"]

MASK = "***"
FORM = (
    "dialect[+driver]://user:password@host:port/database "
    "(e.g. postgresql://tuner:PASSWORD@db-host:5432/studies)"
)
# Query parameters that carry a secret: password, passwd, pwd, sslpassword, secret, token, api_key.
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)
# A parameter's value runs to the next "&name=" or ";name=": an unencoded "&" inside a password
# stays inside the mask.
_QUERY_PARAM = re.compile(r"[?&;]([^=&;?#/]*)=(.*?)(?=[&;][A-Za-z_][\w.-]*=|$)", re.DOTALL)


def _query_spans(url: str) -> list[tuple[int, int]]:
    return [
        (m.start(2), m.end(2))
        for m in _QUERY_PARAM.finditer(url)
        if _SECRET_KEY.search(m.group(1)) and m.group(2)
    ]


def _authority_start(url: str) -> int:
    """Where the user information may begin: after the first ``//``, or at the start when a
    malformed URL has none (``postgresql//…`` has one; ``postgresql:alice:pw@…`` has none)."""
    slashes = url.find("//")
    return slashes + 2 if slashes >= 0 else 0


def _userinfo_span(url: str, limit: int) -> tuple[int, int] | None:
    """The password of the user information: from the first ``:`` after the authority's start
    to the last ``@`` before ``limit`` (a secret query parameter), so a password holding
    ``@``, ``/`` or ``?`` unencoded is masked whole."""
    start = _authority_start(url)
    at = url.rfind("@", start, limit)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    return (colon + 1, at) if colon >= 0 and colon + 1 < at else None


def _spans(url: str) -> list[tuple[int, int]]:
    query = _query_spans(url)
    limit = min((s for s, _ in query), default=len(url))
    user = _userinfo_span(url, limit)
    return sorted([*query, *([user] if user else [])])


def shown_url(url: str) -> str:
    """``url`` with its password and its secret query parameters replaced by ``***``."""
    out, last = [], 0
    for start, end in _spans(url):
        if start < last:
            continue
        out += [url[last:start], MASK]
        last = end
    return "".join(out) + url[last:]


def secrets(url: str) -> list[str]:
    """The secrets ``url`` holds, as written and percent-decoded (as a driver sees them),
    longest first."""
    found = {url[s:e] for s, e in _spans(url)}
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's error, say) without any of ``url``'s secrets."""
    for secret in secrets(url):
        text = text.replace(secret, MASK)
    return text


def check_url(url: str) -> None:
    """Refuse a storage URL that cannot be read as meant, before anything connects to it.

    Raises:
        ConfigError: no ``://`` after the dialect, or an ``@`` in the user name, password or
            a parameter that is not percent-encoded; the message shows the URL masked.
    """
    if not re.match(r"[A-Za-z][\w+.-]*://", url):
        raise ConfigError(
            f"--storage {shown_url(url)}: not a database URL (no '://' after the dialect); "
            f"expected {FORM}"
        )
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):  # no host (sqlite:///path): an '@' is part of the path
        return
    query = _query_spans(url)
    limit = min((s for s, _ in query), default=len(url))
    start = _authority_start(url)
    at = url.rfind("@", start, limit)
    if at >= 0 and "@" in url[start:at]:
        raise ConfigError(
            f"--storage {shown_url(url)}: more than one '@'; an '@' in the user name, the "
            "password or a parameter is written percent-encoded, as %40"
        )
