"""Create the demo source schema ("shop") in a source database."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from contracts import TableContract

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


def create_contracted_tables(source_dsn: str, tables: Iterable[TableContract],
                             schema: str = "public") -> tuple[list[str], dict[str, str]]:
    """Create, empty, each contracted table that ``schema`` lacks (a user's own tables).

    The demo schema has the demo's tables only. A user who adds a table to the demo source
    writes its contract (README "Extending") and models and live views reading it; on a fresh
    demo source (a new ``TIDEMARK_HOME``, a colleague's clone, the tests) the table is created
    from the contract: its columns, types, nullability and primary key (a keyless contract's
    table gets ``REPLICA IDENTITY FULL`` instead, so that it is published). The demo generates
    no rows for it.

    Args:
        source_dsn: URL of the source database, as a role allowed to create tables.
        tables: the table contracts of the demo source (``contracts.load_contracts().tables(
            "shop")``).
        schema: the schema of the demo tables.

    Returns:
        The tables created (sorted), and the reason of each one that could not be (its name
        taken by a sequence or a type, say), by name.
    """
    created: list[str] = []
    failed: dict[str, str] = {}
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        present = {row[0] for row in conn.execute(
            "select table_name from information_schema.tables where table_schema = %s",
            (schema,))}
        for table in sorted(tables, key=lambda t: t.name):
            if table.name in present:
                continue
            columns = [sql.SQL("{} {}{}").format(
                sql.Identifier(spec.name), sql.SQL(spec.type),  # a type the contract validated
                sql.SQL("" if spec.nullable else " not null")) for spec in table.columns.values()]
            if table.primary_key:
                columns.append(sql.SQL("primary key ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, table.primary_key))))
            target = sql.Identifier(schema, table.name)
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("create table {} ({})").format(
                        target, sql.SQL(", ").join(columns)))
                    if not table.primary_key:  # keyless: published (and landed) as a bag
                        conn.execute(sql.SQL("alter table {} replica identity full"
                                             ).format(target))
            except psycopg.Error as exc:
                failed[table.name] = str(exc).strip().splitlines()[0]
                continue
            created.append(table.name)
    return created, failed
