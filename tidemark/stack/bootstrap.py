"""Databases, roles and schemas of the embedded stack, created idempotently.

Roles (least privilege):

- ``tidemark_app``: owns the landing schemas but dbt's; ingestion writes landing as it.
- ``tidemark_dbt``: owns dbt's schemas (staging, intermediate, marts), reads as a reader; dbt
  builds as it (:mod:`tidemark.stack.privileges`).
- ``tidemark_ingest``: LOGIN REPLICATION on the source, SELECT on the replicated tables only.
- ``tidemark_reader``: read-only on landing (mirror, live views, marts, serving) for SQL clients;
  of Tidemark's internal schema only ``tidemark.views`` and ``tidemark.live_changes``.

The embedded server listens on 127.0.0.1 only and asks every connection for its role's password
(``$TIDEMARK_HOME/pgpass``, :mod:`tidemark.stack.credentials`); against your own servers
(``TIDEMARK_SOURCE_URL`` / ``TIDEMARK_LANDING_URL``) create these roles with passwords yourself
(README, "Operations").
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable, Mapping

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ingestion.grants_lock import lock_grants
from tidemark.settings import (
    APP_ROLE,
    DBT_ROLE,
    INGEST_ROLE,
    LANDING_DB,
    READER_ROLE,
    SOURCE_DB,
)
from tidemark.stack.credentials import password_statement, role_passwords, scram_verifier
from tidemark.stack.privileges import (
    DBT_SCHEMAS,
    ensure_dbt_role,
    grant_dbt,
    hand_over,
    keep_private,
)

LANDING_SCHEMAS = ("tidemark", "cdc", "live", "staging", "intermediate", "marts", "serving")


def ensure_roles(admin_dsn: str, passwords: Mapping[str, str] | None = None) -> None:
    """Create the Tidemark roles if they do not exist, and give them their passwords.

    Args:
        admin_dsn: superuser connection to any database of the server.
        passwords: role name to password; by default those of the pgpass file ``admin_dsn``
            names (``passfile=``: the embedded server's URLs), else none (your own servers).
    """
    if passwords is None:
        passwords = role_passwords(conninfo_to_dict(admin_dsn).get("passfile"))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for role, options in (
            (APP_ROLE, sql.SQL("login nosuperuser nocreaterole")),
            (INGEST_ROLE, sql.SQL("login replication nosuperuser nocreaterole nocreatedb")),
            (READER_ROLE, sql.SQL("login nosuperuser nocreaterole nocreatedb")),
        ):
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create role {} {}").format(sql.Identifier(role), options))
        ensure_dbt_role(conn)
        set_passwords(conn, passwords)


def set_passwords(conn: psycopg.Connection, passwords: Mapping[str, str]) -> None:
    """Give each role of ``passwords`` its password, unless its stored verifier already matches.

    Only the SCRAM verifier reaches the server (:func:`scram_verifier`); a verifier is
    replaced only when it is not the password's, so starts do not rewrite the catalog.

    Args:
        conn: autocommit superuser connection.
        passwords: role name to password.
    """
    stored = dict(conn.execute("select rolname, rolpassword from pg_authid where rolname = any(%s)",
                               (list(passwords),)).fetchall())
    for role, password in passwords.items():
        if role not in stored or _matches(stored[role], password):
            continue
        conn.execute(password_statement(role, password))


def _matches(verifier: str | None, password: str) -> bool:
    """Whether ``verifier`` (``pg_authid.rolpassword``) is the SCRAM verifier of ``password``."""
    try:
        salt = base64.b64decode(verifier.split("$")[1].split(":")[1]) if verifier else None
    except (IndexError, ValueError):
        return False
    return salt is not None and verifier.startswith("SCRAM-SHA-256$") and hmac.compare_digest(
        scram_verifier(password, salt), verifier)


def ensure_database(admin_dsn: str, name: str) -> bool:
    """Create database ``name`` if it does not exist.

    Args:
        admin_dsn: superuser connection to another database of the same server.
        name: the database to create.

    Returns:
        True if it was created by this call.
    """
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        return True


def grant_landing(landing_dsn: str, schemas: tuple[str, ...] = LANDING_SCHEMAS) -> None:
    """Create the landing schemas owned by ``tidemark_app`` (dbt's by ``tidemark_dbt``) and open
    them read-only to readers, with every schema ``tidemark_app`` creates (the sources' mirror
    schemas); of ``tidemark`` readers get only what :func:`keep_private` leaves them. Holds the
    grants' advisory lock (``ingestion.grants_lock``) meanwhile.

    Args:
        landing_dsn: superuser connection to the landing database.
        schemas: schema names to create and grant.
    """
    app, reader = sql.Identifier(APP_ROLE), sql.Identifier(READER_ROLE)
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        lock_grants(conn)  # ingestion's DDL takes turns with these grants (its module says why)
        dbname = sql.Identifier(conn.info.dbname)
        conn.execute(sql.SQL("grant connect, create, temporary on database {} to {}").format(
            dbname, app))
        conn.execute(sql.SQL("grant connect on database {} to {}").format(dbname, reader))
        for schema in schemas:
            name = sql.Identifier(schema)
            owner = sql.Identifier(DBT_ROLE) if schema in DBT_SCHEMAS else app
            conn.execute(sql.SQL("create schema if not exists {} authorization {}").format(
                name, owner))
            conn.execute(sql.SQL("grant usage on schema {} to {}").format(name, reader))
            if schema != "tidemark":
                conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(
                    name, reader))
        for owner in (app, sql.Identifier(conn.info.user)):
            conn.execute(sql.SQL(
                "alter default privileges for role {} grant select on tables to {}"
            ).format(owner, reader))
        # A source's mirror schema (<source>) is created by ingestion as tidemark_app when it
        # first lands: readers get its usage from the default privileges, and schemas an
        # earlier version created without it get it here.
        conn.execute(sql.SQL(
            "alter default privileges for role {} grant usage on schemas to {}").format(
                app, reader))
        for (schema,) in conn.execute(
                "select nspname from pg_namespace where nspowner = %s::regrole"
                " and not has_schema_privilege(%s, oid, 'usage')"
                " and nspname <> 'tidemark_state'",  # the live views' engine: not readers'
                (APP_ROLE, READER_ROLE)).fetchall():
            conn.execute(sql.SQL("grant usage on schema {} to {}").format(
                sql.Identifier(schema), reader))
        grant_dbt(conn)
        keep_private(conn)
        hand_over_engine_objects(conn)
    # Live views' DDL guard: event triggers need a superuser, which this connection is.
    from streaming_views.guard import install_guard_at
    install_guard_at(landing_dsn)


GRANT_ATTEMPTS = 5  # the landing grants, run again after a concurrent catalog update

ENGINE_SCHEMAS = ("tidemark", "tidemark_state", "live")
"""Schemas whose objects the live-view engine and ingestion create as ``tidemark_app``."""


def hand_over_engine_objects(conn: psycopg.Connection) -> None:
    """Give ``tidemark_app`` what a superuser created in :data:`ENGINE_SCHEMAS`.

    ``tidemark views`` ran as the superuser on the embedded stack before it ran as
    ``tidemark_app``: the views, state tables, trigger functions and catalog a user deployed
    by hand were the superuser's, and every later deploy by Dagster failed ("permission denied
    for view", "must be owner of table views"). Every start hands them over.

    Args:
        conn: autocommit superuser connection to the landing database.
    """
    hand_over(conn, APP_ROLE, ENGINE_SCHEMAS, sql.SQL("r.rolsuper"))


def grant_source(source_dsn: str, schema: str = "public") -> None:
    """Let the ingestion role read the source tables it replicates.

    Args:
        source_dsn: superuser connection to the source database.
        schema: the schema of the replicated tables.
    """
    ingest, name = sql.Identifier(INGEST_ROLE), sql.Identifier(schema)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        dbname = sql.Identifier(conn.info.dbname)
        conn.execute(sql.SQL("grant connect on database {} to {}").format(dbname, ingest))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(name, ingest))
        conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(name, ingest))
        conn.execute(sql.SQL(
            "alter default privileges in schema {} grant select on tables to {}"
        ).format(name, ingest))


def bootstrap_embedded(server_admin_url_for: Callable[[str], str]) -> None:
    """Create roles, the ``shop`` and ``tidemark`` databases and the landing schemas.

    Args:
        server_admin_url_for: a callable mapping a database name to its superuser URL.

    Processes starting together take turns (``tidemark up`` starts ingestion and the view
    ticker at once, and each bootstraps): concurrent GRANTs on one object fail with "tuple
    concurrently updated", so the whole bootstrap holds a session-level advisory lock.
    """
    with psycopg.connect(server_admin_url_for("postgres"), autocommit=True) as lock:
        lock.execute("select pg_advisory_lock(hashtext('tidemark.bootstrap'))")
        ensure_roles(server_admin_url_for("postgres"))
        for db in (SOURCE_DB, LANDING_DB):
            ensure_database(server_admin_url_for("postgres"), db)
        # A process that does not bootstrap can still update a catalog row these GRANTs and
        # REVOKEs update: "tuple concurrently updated" (seen: the view ticker's start beside
        # `ingest run` of a second source). Ingestion's DDL takes turns with them
        # (ingestion.grants_lock); a live-view deploy (schemas live, tidemark_state) and dbt's
        # swaps (staging, marts) do not, so the grants, idempotent, still run again.
        for attempt in range(1, GRANT_ATTEMPTS + 1):
            try:
                grant_landing(server_admin_url_for(LANDING_DB))
                break
            except psycopg.errors.InternalError_ as exc:
                if "tuple concurrently updated" not in str(exc) or attempt == GRANT_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
