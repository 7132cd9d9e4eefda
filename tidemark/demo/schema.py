"""Create the demo source schema ("shop") in a source database."""

from __future__ import annotations

from importlib.resources import files

import psycopg
from psycopg import sql

SCHEMA_SQL = files("tidemark.demo").joinpath("schema.sql")

DEMO_TABLES = ("stores", "customers", "products", "orders", "order_items", "payments",
               "deliveries", "app_events")


def apply_schema(source_dsn: str, schema: str = "public") -> None:
    """Create the demo tables if they do not exist (idempotent).

    Args:
        source_dsn: URL of the source database, as a role allowed to create tables.
        schema: the schema to create them in (created too when missing).
    """
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        apply_schema_on(conn, schema)


def apply_schema_on(conn: psycopg.Connection, schema: str = "public") -> None:
    """Create the demo tables in ``schema`` over an open connection (idempotent).

    The connection's ``search_path`` is set to ``schema`` for the rest of its session.

    Args:
        conn: an open connection, as a role allowed to create tables.
        schema: the schema to create them in (created too when missing).
    """
    absent = conn.execute("select not exists (select from pg_namespace where nspname = %s)",
                          (schema,)).fetchone()[0]
    if absent:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    conn.execute("select set_config('search_path', %s, false)",
                 (sql.Identifier(schema).as_string(conn),))
    conn.execute(SCHEMA_SQL.read_text())


def missing_tables(conn: psycopg.Connection, schema: str = "public") -> list[str]:
    """Names of the demo tables that do not exist in ``schema``.

    Args:
        conn: an open connection to the source database.
        schema: the schema to look in.
    """
    rows = conn.execute(
        "select t from unnest(%s::text[]) as t where to_regclass(format('%%I.%%I', %s::text, t))"
        " is null", (list(DEMO_TABLES), schema)).fetchall()
    return [row[0] for row in rows]
