"""Masking the passwords of a connection string before it is printed (standard library only:
the dbt child process imports it before it starts dbt, :mod:`tidemark.stack.childenv`)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# A password in a URL's query, and in a key=value connection string ('quoted' or bare).
_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&#]+", re.IGNORECASE)  # empty: no secret
# (a bare value runs to the next `key=`: a malformed one may hold spaces, all of it is masked)
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|.*?(?=\s+\w+\s*=|\s*$))",
                               re.IGNORECASE | re.DOTALL)


def redact(url: str) -> str:
    """Return a connection string with every password in it replaced by ``***``.

    The one place Tidemark masks a secret before printing a connection string. It covers each
    way libpq accepts a password: ``user:password@`` in a URL, a ``password=`` parameter in a
    URL's query (``?password=...``), and ``password=...`` in a ``key=value`` connection string
    (quoted or not). Everything else is kept as written.

    Args:
        url: a libpq URL or ``key=value`` connection string, possibly with a password.

    Returns:
        The same string, safe to print.
    """
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    parts = urlsplit(url)
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    if parts.password is None:
        return urlunsplit(parts._replace(query=query))
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    host = netloc[1] if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}", query=query))
