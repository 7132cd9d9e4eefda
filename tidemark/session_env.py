"""The session settings of Tidemark's own PostgreSQL connections, pinned in libpq's environment.

A user's shell or server may change how a session prints and reads values: ``PGDATESTYLE``,
``PGTZ`` and ``PGOPTIONS`` in the environment, or ``ALTER DATABASE/ROLE ... SET`` on their
server (``DateStyle = 'SQL, DMY'``, ``extra_float_digits = 0``, ``statement_timeout = '30s'``).
Tidemark's sessions must not depend on them: a timestamp printed as ``03/12/2026 21:20 IST``
cannot be parsed back, a float printed with fewer digits is a different value, a day boundary in
another zone puts rows in another partition, and a timeout cuts a snapshot's ``COPY`` short.

:func:`pin_session_environment` makes every libpq connection the process and its children open
(psycopg 3, psycopg2's replication stream, dbt, ``psql``) start with :data:`SESSION_SETTINGS`:
``PGOPTIONS`` carries them (startup options come before any database or role setting) and the
variables libpq sends after them (``PGCLIENTENCODING``, ``PGDATESTYLE``, ``PGTZ``, ``PGGEQO``)
are removed. libpq
ignores ``PGOPTIONS`` for a URL that names its own ``options``: :func:`pin_url` gives such a
source or landing URL the settings after its own options. The ``tidemark``
command and the Dagster code location call it when they start; a user's own sessions (``psql``
in their shell) keep their settings.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

import psycopg.conninfo

from ingestion.session_settings import SESSION_SETTINGS, pinned_dsn, session_options

__all__ = ["SESSION_SETTINGS", "pin_session_environment", "pin_url", "session_options", "unpinned"]

AFTER_OPTIONS = ("PGCLIENTENCODING", "PGDATESTYLE", "PGTZ", "PGGEQO")
"""libpq variables sent as startup settings after ``PGOPTIONS``'s, so they would win."""


def pin_session_environment(env: MutableMapping[str, str] | None = None) -> list[str]:
    """Pin the session settings of every libpq connection made with ``env`` (default: this process).

    Args:
        env: the environment to change.

    Returns:
        The variables that were set and are replaced or removed (names only: values may hold
        anything).
    """
    env = os.environ if env is None else env
    changed = [name for name in AFTER_OPTIONS if env.pop(name, None) is not None]
    options = session_options()
    if env.get("PGOPTIONS", options) != options:
        changed.append("PGOPTIONS")
    env["PGOPTIONS"] = options
    return changed


def pin_url(url: str | None) -> str | None:
    """``url`` with :data:`SESSION_SETTINGS` after its own ``options``, if it names any.

    libpq ignores ``PGOPTIONS`` for a URL with ``options`` of its own, so such a URL carries the
    settings itself (:func:`ingestion.session_settings.pinned_dsn`). Any other URL (and None)
    is returned as it is: ``PGOPTIONS`` reaches it.
    """
    if url is None or "options" not in psycopg.conninfo.conninfo_to_dict(url):
        return url
    return pinned_dsn(url)


def unpinned(url: str) -> str:
    """``url`` with its own ``options`` (or none), not :data:`SESSION_SETTINGS`.

    For servers that are not PostgreSQL (Materialize accepts few of these settings).
    """
    return psycopg.conninfo.make_conninfo(
        url, options=psycopg.conninfo.conninfo_to_dict(url).get("options") or "")
