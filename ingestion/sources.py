"""The source registry: every PostgreSQL database Tidemark replicates, by name.

A source is registered once (``tidemark source add``) and kept in the landing table
``tidemark.sources``; ingestion, status and contracts follow from it. A registration holds no
secret:

- ``url`` is a libpq URL **without a password** (refused with one); the password comes from the
  environment variable ``TIDEMARK_SOURCE_<NAME>_PASSWORD`` when it is set, else from libpq's
  own ``PGPASSWORD`` / ``~/.pgpass``;
- or ``url_env`` names an environment variable that holds the whole URL (password included),
  read only when connecting (e.g. ``TIDEMARK_SOURCE_URL`` in the compose stack).

``admin_url`` / ``admin_url_env`` (password: ``TIDEMARK_SOURCE_<NAME>_ADMIN_PASSWORD``) name a
role that owns the tables, used to create and update the publication and to emit heartbeats;
without one, the stream's URL is used for that too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingestion.errors import SourceError, UnknownSourceError
from ingestion.names import check_source_name
from ingestion.publication import Selection

REGISTRY_DDL = """
    create table if not exists tidemark.sources (
        name text primary key,
        url text,
        url_env text,
        admin_url text,
        admin_url_env text,
        schemas text[],
        tables text[],
        added_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        last_error text,
        last_error_at timestamptz,
        check ((url is null) <> (url_env is null))
    )"""


def password_variable(name: str, admin: bool = False) -> str:
    """The environment variable holding a source's password (``TIDEMARK_SOURCE_<NAME>_...``)."""
    return f"TIDEMARK_SOURCE_{name.upper()}_{'ADMIN_' if admin else ''}PASSWORD"


def check_url(url: str, what: str = "--url", name: str = "<name>") -> str:
    """Return ``url`` if it is a libpq URL or DSN without a password.

    Raises:
        SourceError: it cannot be parsed, or it holds a password (never echoed).
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise SourceError(f"{what} is not a PostgreSQL connection URL; expected e.g. "
                          f"postgresql://user@host:5432/dbname.") from None
    # An empty password= (the embedded server's URLs: it keeps PGPASSWORD out) is no secret;
    # one in user:password@ is, even where a later password= overrides it for libpq.
    if params.get("password") or ("://" in url and urlsplit(url).password):
        raise SourceError(
            f"{what} holds a password; Tidemark never stores one. Remove it from the URL and "
            f"export it in {password_variable(name, what == '--admin-url')} (or use "
            f"~/.pgpass), or pass "
            f"{what}-env VAR naming an environment variable that holds the whole URL.")
    if not params.get("dbname"):
        raise SourceError(f"{what} names no database; expected e.g. "
                          f"postgresql://user@host:5432/dbname.")
    return url


@dataclass(frozen=True)
class SourceSpec:
    """A registered source.

    Attributes:
        name: the source name (landing schema, slot ``tidemark_<name>``, contracts folder).
        url: libpq URL without password, or None when ``url_env`` is used.
        url_env: environment variable holding the stream's URL.
        admin_url: URL of a role owning the tables (publication, heartbeats), or None.
        admin_url_env: environment variable holding that URL.
        schemas: replicated schemas (every table in them, also tables created later).
        tables: replicated tables (``schema.table``) instead of whole schemas.
        last_error: the last permanent error ingestion reported for it, or None.
    """

    name: str
    url: str | None = None
    url_env: str | None = None
    admin_url: str | None = None
    admin_url_env: str | None = None
    schemas: tuple[str, ...] | None = None
    tables: tuple[str, ...] | None = None
    last_error: str | None = None

    def __post_init__(self) -> None:
        check_source_name(self.name)
        if (self.url is None) == (self.url_env is None):
            raise SourceError(f"Source {self.name!r}: give exactly one of --url and --url-env.")
        if self.admin_url is not None and self.admin_url_env is not None:
            raise SourceError(f"Source {self.name!r}: give at most one of --admin-url and "
                              f"--admin-url-env.")
        if self.schemas and self.tables:
            raise SourceError(f"Source {self.name!r}: choose --schemas or --tables, not both.")
        for url, what in ((self.url, "--url"), (self.admin_url, "--admin-url")):
            if url is not None:
                check_url(url, what, self.name)

    @property
    def selection(self) -> Selection:
        """What the source replicates."""
        return Selection.of(self.schemas, self.tables)

    def dsn(self) -> str:
        """The stream's connection string, with the password from the environment.

        Raises:
            SourceError: ``url_env`` names a variable that is not set.
        """
        return _resolve(self.name, self.url, self.url_env, admin=False)

    def admin_dsn(self) -> str:
        """The connection string for publication changes and heartbeats."""
        if self.admin_url is None and self.admin_url_env is None:
            return self.dsn()
        return _resolve(self.name, self.admin_url, self.admin_url_env, admin=True)

    def shown_url(self) -> str:
        """The stream URL as it may be printed (a variable's name, never its value)."""
        return self.url if self.url is not None else f"${self.url_env}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form without secrets."""
        return {"name": self.name, "url": self.shown_url(),
                "admin_url": self.admin_url or (f"${self.admin_url_env}"
                                                if self.admin_url_env else None),
                "selection": self.selection.describe(), "last_error": self.last_error}


def _resolve(name: str, url: str | None, url_env: str | None, admin: bool) -> str:
    if url_env is not None:
        value = os.environ.get(url_env, "").strip()
        if not value:
            raise SourceError(f"Source {name!r} reads its {'admin ' if admin else ''}URL from "
                              f"the environment variable {url_env}, which is not set.")
        try:  # libpq's own message quotes the bad part, which may be the password
            conninfo_to_dict(value)
        except psycopg.ProgrammingError:
            raise SourceError(f"Source {name!r}: the URL in {url_env} cannot be read by libpq "
                              f"(not shown: it holds the password); check its quoting, and "
                              f"write a '%' in a URL's password as '%25'.") from None
        return value
    assert url is not None
    password = os.environ.get(password_variable(name, admin))
    if password is None and admin:
        password = os.environ.get(password_variable(name))
    return make_conninfo(url, password=password) if password else url


def ensure_registry(conn: psycopg.Connection) -> None:
    """Create ``tidemark.sources`` if missing (in the caller's transaction)."""
    conn.execute("create schema if not exists tidemark")
    conn.execute(REGISTRY_DDL)


_SELECT = ("select name, url, url_env, admin_url, admin_url_env, schemas, tables, last_error"
           " from tidemark.sources order by name")


def _spec(row: tuple) -> SourceSpec:
    return SourceSpec(row[0], row[1], row[2], row[3], row[4],
                      tuple(row[5]) if row[5] else None, tuple(row[6]) if row[6] else None,
                      row[7])


def list_sources(landing_dsn: str) -> list[SourceSpec]:
    """Every registered source, by name."""
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        if conn.execute("select to_regclass('tidemark.sources')").fetchone()[0] is None:
            return []
        return [_spec(r) for r in conn.execute(_SELECT)]


def get_source(landing_dsn: str, name: str) -> SourceSpec:
    """A registered source.

    Raises:
        UnknownSourceError: ``name`` is not registered (the message lists those that are).
    """
    sources = list_sources(landing_dsn)
    for spec in sources:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in sources) or "none yet"
    raise UnknownSourceError(
        f"No source named {name!r} is registered (registered: {known}). Register it with "
        f"`tidemark source add {name} --url postgresql://USER@HOST:PORT/DBNAME`; "
        f"`tidemark source list` shows the sources.")


def registered_selection(conn: psycopg.Connection, name: str) -> Selection | None:
    """The selection a source is registered with, or None (not registered)."""
    if conn.execute("select to_regclass('tidemark.sources')").fetchone()[0] is None:
        return None
    row = conn.execute("select schemas, tables from tidemark.sources where name = %s",
                       (name,)).fetchone()
    return None if row is None else Selection.of(row[0], row[1])


def save_source(landing_dsn: str, spec: SourceSpec) -> None:
    """Insert or replace the registration of ``spec.name``."""
    with psycopg.connect(landing_dsn) as conn:
        ensure_registry(conn)
        conn.execute(
            "insert into tidemark.sources as s (name, url, url_env, admin_url, admin_url_env,"
            " schemas, tables) values (%s, %s, %s, %s, %s, %s, %s) on conflict (name) do update"
            " set url = excluded.url, url_env = excluded.url_env, admin_url = excluded.admin_url,"
            " admin_url_env = excluded.admin_url_env, schemas = excluded.schemas,"
            " tables = excluded.tables, updated_at = now(), last_error = null,"
            " last_error_at = null",
            (spec.name, spec.url, spec.url_env, spec.admin_url, spec.admin_url_env,
             list(spec.schemas) if spec.schemas else None,
             list(spec.tables) if spec.tables else None))


def delete_source(landing_dsn: str, name: str) -> None:
    """Remove the registration of ``name`` (landing data is left alone)."""
    with psycopg.connect(landing_dsn) as conn:
        ensure_registry(conn)
        conn.execute("delete from tidemark.sources where name = %s", (name,))


def record_error(landing_dsn: str, name: str, message: str | None) -> None:
    """Remember (or clear, with None) the last permanent error of a source."""
    try:
        with psycopg.connect(landing_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("update tidemark.sources set last_error = %s, last_error_at ="
                         " case when %s::text is null then null else now() end where name = %s",
                         (message, message, name))
    except psycopg.Error:
        pass  # landing unreachable: the log line is the report

