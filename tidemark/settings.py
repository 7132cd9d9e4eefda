"""Settings of the one-machine stack, read from the environment.

Every setting has a default that works on a fresh clone; secrets are only ever read from the
environment and never printed (see :func:`redact`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tidemark.errors import SettingsError

DEFAULT_PORT = 55432
SOURCE_DB = "shop"
LANDING_DB = "tidemark"
ADMIN_USER = "postgres"
APP_ROLE = "tidemark_app"
INGEST_ROLE = "tidemark_ingest"
READER_ROLE = "tidemark_reader"


@dataclass(frozen=True)
class Settings:
    """Where Tidemark keeps its state and how it reaches its databases.

    Attributes:
        home: ``TIDEMARK_HOME``: data directory of the embedded server, logs, Dagster home.
        port: ``TIDEMARK_PG_PORT``: TCP port of the embedded server on 127.0.0.1.
        source_url: ``TIDEMARK_SOURCE_URL``: an external source server, or None (embedded).
        landing_url: ``TIDEMARK_LANDING_URL``: an external landing server, or None (embedded).
    """

    home: Path
    port: int
    source_url: str | None
    landing_url: str | None

    @property
    def pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.home / "pgdata"

    @property
    def log_dir(self) -> Path:
        """Directory for process logs."""
        return self.home / "logs"

    @property
    def uses_embedded(self) -> bool:
        """True when at least one of source and landing lives on the embedded server."""
        return self.source_url is None or self.landing_url is None

    def embedded_url(self, database: str, user: str = ADMIN_USER) -> str:
        """Connection URL of a database on the embedded server."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def source_dsn(self) -> str:
        """Admin connection URL of the source database ("shop" when embedded)."""
        return self.source_url or self.embedded_url(SOURCE_DB)

    def landing_dsn(self) -> str:
        """Admin connection URL of the landing database ("tidemark" when embedded)."""
        return self.landing_url or self.embedded_url(LANDING_DB)

    def reader_dsn(self) -> str:
        """Read-only URL for SQL clients (psql, BI tools) on the landing database."""
        if self.landing_url is not None:
            return redact(self.landing_url)
        return self.embedded_url(LANDING_DB, READER_ROLE)


def _url_from_env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise SettingsError(
            f"{name} must be a URL like postgresql://user@host:5432/dbname; "
            f"got {redact(value)!r}. Unset it to use the embedded server."
        )
    return value


def load_settings() -> Settings:
    """Read the settings from the environment.

    Returns:
        The settings, with defaults filled in.

    Raises:
        SettingsError: a variable is set to a value that cannot be used.
    """
    home = Path(os.environ.get("TIDEMARK_HOME") or ".tidemark").expanduser().resolve()
    raw_port = os.environ.get("TIDEMARK_PG_PORT", "").strip() or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        raise SettingsError(
            f"TIDEMARK_PG_PORT must be a TCP port number (1024-65535); got {raw_port!r}."
        ) from None
    if not 1024 <= port <= 65535:
        raise SettingsError(f"TIDEMARK_PG_PORT must be between 1024 and 65535; got {port}.")
    return Settings(
        home=home,
        port=port,
        source_url=_url_from_env("TIDEMARK_SOURCE_URL"),
        landing_url=_url_from_env("TIDEMARK_LANDING_URL"),
    )


def redact(url: str) -> str:
    """Return a connection URL with its password replaced by ``***``.

    Args:
        url: a libpq URL, possibly with a password.

    Returns:
        The same URL, safe to print.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    host = netloc[1] if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
