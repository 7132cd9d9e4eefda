"""The view catalog ``tidemark.views``: one row per deployed view and target."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

CATALOG_DDL = [
    "create schema if not exists tidemark",
    "create schema if not exists tidemark_state",
    "create schema if not exists live",
    """create table if not exists tidemark.views (
        name text not null,
        target text not null check (target in ('embedded', 'materialize')),
        definition_hash text not null,
        suffix text not null,
        definition text not null,
        path text not null,
        base_tables text[] not null,
        columns text[] not null,
        deployed_at timestamptz not null default now(),
        primary key (name, target)
    )""",
    # auxiliary objects of the embedded engine (see streaming_views.auxiliary)
    "alter table tidemark.views add column if not exists aux_tables text[] not null default '{}'",
    "alter table tidemark.views add column if not exists base_indexes text[] not null "
    "default '{}'",
    # health (see streaming_views.runtime.live_problem and streaming_views.guard)
    "alter table tidemark.views add column if not exists status text not null default 'ok'",
    "alter table tidemark.views add column if not exists problem text",
    "alter table tidemark.views add column if not exists base_oids oid[] not null default '{}'",
    "alter table tidemark.views add column if not exists used_columns jsonb not null "
    "default '[]'",
]


@dataclass(frozen=True)
class CatalogEntry:
    """One deployed view as the catalog records it."""

    name: str
    target: str
    definition_hash: str
    suffix: str
    definition: str
    path: str
    base_tables: list[str]
    columns: list[str]
    deployed_at: datetime
    aux_tables: list[str] = field(default_factory=list)
    base_indexes: list[str] = field(default_factory=list)
    status: str = "ok"
    problem: str | None = None
    base_oids: list[int] = field(default_factory=list)
    used_columns: list[list[dict[str, Any]]] = field(default_factory=list)


CATALOG_COLUMNS = [m.group(1) for m in (re.search(r"add column if not exists (\w+)", s)
                                         for s in CATALOG_DDL) if m]


def ensure_catalog(conn: psycopg.Connection) -> None:
    """Create the schemas ``tidemark``, ``tidemark_state``, ``live``, the catalog table and the
    engine's shared runtime objects (:mod:`streaming_views.runtime`).

    A catalog that has every column already is left alone: ``alter table ... add column if
    not exists`` takes ACCESS EXCLUSIVE even when there is nothing to add, so it waited for
    ingestion's transaction (whose apply reads the catalog) — for minutes, when a large source
    transaction is applied — and every session reading the catalog queued behind it.
    """
    from streaming_views.runtime import ensure_runtime
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(7461646)")  # serialise concurrent first deploys
        current = cur.execute(
            "select count(*) = %s from pg_attribute where attrelid = to_regclass("
            "'tidemark.views') and attname = any(%s) and not attisdropped",
            (len(CATALOG_COLUMNS), CATALOG_COLUMNS)).fetchone()
        for stmt in CATALOG_DDL:
            if not (current and current[0]) or stmt.startswith("create schema"):
                cur.execute(stmt)  # type: ignore[arg-type]
    ensure_runtime(conn)


def read_catalog(conn: psycopg.Connection, target: str | None = None,
                 name: str | None = None) -> list[CatalogEntry]:
    """Return catalog entries (all, or of one target / one name), by name."""
    exists = conn.execute("select to_regclass('tidemark.views') is not null").fetchone()
    if not exists or not exists[0]:
        return []
    conds = [sql.SQL("true")]
    params: list[str] = []
    if target is not None:
        conds.append(sql.SQL("target = %s"))
        params.append(target)
    if name is not None:
        conds.append(sql.SQL("name = %s"))
        params.append(name)
    query = sql.SQL("select name, target, definition_hash, suffix, definition, path, base_tables, "
                    "columns, deployed_at, aux_tables, base_indexes, status, problem, "
                    "base_oids::bigint[] as base_oids, used_columns from tidemark.views "
                    "where {} order by name, target"
                    ).format(sql.SQL(" and ").join(conds))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [CatalogEntry(**row) for row in cur.fetchall()]


def record(conn: psycopg.Connection, entry: CatalogEntry) -> None:
    """Insert or replace a catalog entry."""
    conn.execute(
        "insert into tidemark.views (name, target, definition_hash, suffix, definition, path, "
        "base_tables, columns, deployed_at, aux_tables, base_indexes, status, problem, "
        "base_oids, used_columns) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s::oid[], %s) "
        "on conflict (name, target) do update set definition_hash = excluded.definition_hash, "
        "suffix = excluded.suffix, definition = excluded.definition, path = excluded.path, "
        "base_tables = excluded.base_tables, columns = excluded.columns, "
        "deployed_at = excluded.deployed_at, aux_tables = excluded.aux_tables, "
        "base_indexes = excluded.base_indexes, status = excluded.status, "
        "problem = excluded.problem, base_oids = excluded.base_oids, "
        "used_columns = excluded.used_columns",
        (entry.name, entry.target, entry.definition_hash, entry.suffix, entry.definition,
         entry.path, entry.base_tables, entry.columns, entry.aux_tables, entry.base_indexes,
         entry.status, entry.problem, entry.base_oids, Jsonb(entry.used_columns)))


def forget(conn: psycopg.Connection, name: str, target: str) -> None:
    """Delete a catalog entry (and the embedded engine's change counter of the view)."""
    conn.execute("delete from tidemark.views where name = %s and target = %s", (name, target))
    if target == "embedded":
        conn.execute("delete from tidemark.live_changes where name = %s", (name,))
