"""Where the source and landing databases are: the embedded server, or external servers.

Every command that needs a database calls :func:`ensure_databases` (start if needed) or
:func:`locate_databases` (never start) and gets the URLs from the returned :class:`Databases`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from tidemark.errors import ExternalServerError
from tidemark.session_env import pin_url
from tidemark.settings import (
    APP_ROLE,
    DBT_ROLE,
    INGEST_ROLE,
    LANDING_DB,
    SOURCE_DB,
    Settings,
    redact,
)
from tidemark.stack.bootstrap import bootstrap_embedded, grant_source
from tidemark.stack.embedded import EmbeddedServer


@dataclass(frozen=True)
class Databases:
    """Connection URLs of the stack.

    Attributes:
        source: superuser (or owner) URL of the source database.
        landing: superuser (or owner) URL of the landing database.
        source_ingest: URL ingestion uses to read the source (replication role when embedded).
        landing_app: URL ingestion and the platform write landing with (``tidemark_app`` when
            embedded).
        landing_dbt: URL dbt builds with (``tidemark_dbt`` when embedded; on your own landing
            server ``TIDEMARK_LANDING_DBT_URL``, else ``TIDEMARK_LANDING_URL`` with a warning).
        reader: read-only URL for SQL clients.
        server: the embedded server, when one is used.
    """

    source: str
    landing: str
    source_ingest: str
    landing_app: str
    landing_dbt: str
    reader: str
    server: EmbeddedServer | None


def locate_databases(settings: Settings) -> Databases:
    """Return the URLs of the stack without starting anything."""
    server = EmbeddedServer(settings) if settings.uses_embedded else None
    return Databases(
        source=settings.source_dsn(),
        landing=settings.landing_dsn(),
        source_ingest=pin_url(settings.source_url) or settings.embedded_url(SOURCE_DB, INGEST_ROLE),
        landing_app=pin_url(settings.landing_url) or settings.embedded_url(LANDING_DB, APP_ROLE),
        landing_dbt=dbt_url(settings),
        reader=settings.reader_dsn(),
        server=server,
    )


_log = logging.getLogger(__name__)
_warned: set[str] = set()


def dbt_url(settings: Settings) -> str:
    """The landing URL dbt builds with: ``tidemark_dbt`` on the embedded server; on your own
    landing server ``TIDEMARK_LANDING_DBT_URL``, else (warned once per process)
    ``TIDEMARK_LANDING_URL``, whose role owns far more than dbt needs."""
    if settings.landing_url is None:
        return settings.embedded_url(LANDING_DB, DBT_ROLE)
    if settings.landing_dbt_url is not None:
        return pin_url(settings.landing_dbt_url)  # type: ignore[return-value]
    if "TIDEMARK_LANDING_DBT_URL" not in _warned:
        _warned.add("TIDEMARK_LANDING_DBT_URL")
        _log.warning("TIDEMARK_LANDING_DBT_URL is not set: dbt builds with TIDEMARK_LANDING_URL's "
                     "role. Create the role tidemark_dbt (README, \"Roles\") and set "
                     "TIDEMARK_LANDING_DBT_URL to its URL.")
    return pin_url(settings.landing_url)  # type: ignore[return-value]


def ensure_databases(settings: Settings) -> Databases:
    """Start the embedded server if the stack uses it, create databases, roles and grants.

    External servers (``TIDEMARK_SOURCE_URL`` / ``TIDEMARK_LANDING_URL``) are only checked for
    reachability: Tidemark never starts or reconfigures them.

    Raises:
        ExternalServerError: an external server does not answer.
    """
    dbs = locate_databases(settings)
    if dbs.server is not None:
        dbs.server.start()
        bootstrap_embedded(dbs.server.admin_url)
        grant_source(dbs.server.admin_url(SOURCE_DB))
    for name, url in (("TIDEMARK_SOURCE_URL", settings.source_url),
                      ("TIDEMARK_LANDING_URL", settings.landing_url)):
        if url is not None:
            check_reachable(name, url)
    return dbs


def check_reachable(name: str, url: str) -> None:
    """Connect once to ``url``; raise a clear error naming the variable if that fails."""
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        # libpq's first line says what failed ("... failed: Connection refused", "... failed:
        # FATAL: ..."); a second line may add a hint ("Is the server running ...?")
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[0].rpartition("failed: ")[2] if lines else type(exc).__name__
        if len(lines) > 1:
            reason += f" ({' '.join(lines[1:])})"
        raise ExternalServerError(
            f"Cannot connect to {name} ({redact(url)}): {reason}. Check host, port, user and "
            f"that the server accepts connections from this machine, or unset {name} to use "
            f"the embedded server."
        ) from None
