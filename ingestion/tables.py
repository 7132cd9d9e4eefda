"""Replicated tables in landing: their shape, the mirror and changelog DDL, and the registry
``tidemark.replicated_tables`` that remembers both across restarts.

Type names come from the source's ``format_type`` (already quoted by PostgreSQL); every identifier
is composed with ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ingestion.names import CHANGELOG_SCHEMA, changelog_table_name

META_COLUMNS = ("_op", "_lsn", "_commit_lsn", "_seq", "_commit_at", "_txid", "_ingested_at")


@dataclass
class ColumnInfo:
    """A replicated column.

    Attributes:
        name: column name (same in source, mirror and changelog).
        type_oid: source type OID.
        typmod: source type modifier.
        type_sql: the landing type, as ``format_type`` prints it.
    """

    name: str
    type_oid: int
    typmod: int
    type_sql: str

    def as_json(self) -> dict:
        """The registry's JSON form."""
        return {"name": self.name, "type_oid": self.type_oid, "typmod": self.typmod,
                "type": self.type_sql}


@dataclass
class TableInfo:
    """A replicated table as landing knows it.

    Attributes:
        source: source name (the mirror's schema).
        name: landing table name.
        source_schema: schema on the source.
        source_table: table name on the source.
        source_oid: relation OID on the source.
        columns: the columns, in source order.
        key: key column names (primary key, else replica identity index).
        version: bumped at every DDL change of the landing tables.
        paused_reason: why the table is paused, or None when it flows.
    """

    source: str
    name: str
    source_schema: str
    source_table: str
    source_oid: int
    columns: list[ColumnInfo]
    key: list[str]
    version: int = 1
    paused_reason: str | None = None
    key_idx: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute derived fields after ``columns`` or ``key`` changed."""
        names = [c.name for c in self.columns]
        self.key_idx = [names.index(k) for k in self.key if k in names]

    @property
    def column_names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    @property
    def mirror(self) -> sql.Identifier:
        """``<source>.<table>``."""
        return sql.Identifier(self.source, self.name)

    @property
    def changelog(self) -> sql.Identifier:
        """``cdc.<source>__<table>``."""
        return sql.Identifier(CHANGELOG_SCHEMA, changelog_table_name(self.source, self.name))

    @property
    def qualified(self) -> str:
        """``source.table`` for messages."""
        return f"{self.source}.{self.name}"


def _coldefs(columns: list[ColumnInfo]) -> sql.Composed:
    # type_sql is format_type() output from the source catalog: a type name, not user input.
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type_sql)) for c in columns)


def create_landing_tables(conn: psycopg.Connection, info: TableInfo) -> None:
    """Create the mirror and changelog of a table if missing (in the caller's transaction)."""
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(info.source)))
    key = sql.SQL(", ").join(map(sql.Identifier, info.key))
    conn.execute(sql.SQL("create table if not exists {} ({}, primary key ({}))").format(
        info.mirror, _coldefs(info.columns), key))
    conn.execute(sql.SQL(
        "create table if not exists {} ({}, _op text not null, _lsn pg_lsn not null,"
        " _commit_lsn pg_lsn not null, _seq integer not null, _commit_at timestamptz,"
        " _txid bigint, _ingested_at timestamptz not null default clock_timestamp(),"
        " unique (_commit_lsn, _seq))").format(info.changelog, _coldefs(info.columns)))


def add_column(conn: psycopg.Connection, info: TableInfo, column: ColumnInfo) -> None:
    """Add a (nullable) column to mirror and changelog."""
    for table in (info.mirror, info.changelog):
        conn.execute(sql.SQL("alter table {} add column if not exists {} {}").format(
            table, sql.Identifier(column.name), sql.SQL(column.type_sql)))


def save_table(conn: psycopg.Connection, info: TableInfo) -> None:
    """Insert or update the registry row of a table."""
    from psycopg.types.json import Jsonb

    conn.execute(
        """
        insert into tidemark.replicated_tables as t (source, table_name, source_schema,
            source_table, source_oid, columns, key_columns, version, paused_at, paused_reason)
        values (%s, %s, %s, %s, %s, %s, %s, %s,
            case when %s::text is null then null else clock_timestamp() end, %s)
        on conflict (source, table_name) do update set
            source_oid = excluded.source_oid, columns = excluded.columns,
            key_columns = excluded.key_columns, version = excluded.version,
            paused_at = case when excluded.paused_reason is null then null
                             else coalesce(t.paused_at, excluded.paused_at) end,
            paused_reason = excluded.paused_reason, updated_at = clock_timestamp()
        """,
        (info.source, info.name, info.source_schema, info.source_table, info.source_oid,
         Jsonb([c.as_json() for c in info.columns]), info.key, info.version,
         info.paused_reason, info.paused_reason))


def load_tables(conn: psycopg.Connection, source: str) -> dict[str, TableInfo]:
    """All registered tables of a source, by landing table name."""
    out = {}
    for row in conn.execute(
            "select table_name, source_schema, source_table, source_oid, columns, key_columns,"
            " version, paused_reason from tidemark.replicated_tables where source = %s",
            (source,)):
        cols = [ColumnInfo(c["name"], c["type_oid"], c["typmod"], c["type"]) for c in row[4]]
        out[row[0]] = TableInfo(source, row[0], row[1], row[2], row[3] or 0, cols, list(row[5]),
                                row[6], row[7])
    return out


def table_versions(conn: psycopg.Connection, source: str) -> dict[str, tuple[int, bool]]:
    """(version, paused) of every registered table: cheap, read in every landing transaction."""
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        "select table_name, version, paused_at is not null from tidemark.replicated_tables"
        " where source = %s", (source,))}


@dataclass
class SchemaChange:
    """One difference between the registered columns and a new Relation message.

    Attributes:
        kind: a contract change kind: add_nullable_column, add_required_column, drop_column,
            rename_column or change_type.
        column: the column concerned (the old name for renames and drops).
        detail: a sentence saying what changed.
        new_column: the added column (adds only).
    """

    kind: str
    column: str
    detail: str
    new_column: ColumnInfo | None = None

    @property
    def breaking(self) -> bool:
        """Whether landing cannot follow the change by itself."""
        return not self.kind.startswith("add_")


def diff_columns(old: list[ColumnInfo], new: list[ColumnInfo],
                 not_null: set[str]) -> list[SchemaChange]:
    """Compare registered columns with a Relation message's columns.

    Args:
        old: the registered columns.
        new: the columns of the Relation message (type names filled in).
        not_null: names of source columns that are NOT NULL now (for added columns).

    Returns:
        The changes, empty when the shapes are equal.
    """
    old_names = {c.name for c in old}
    new_by_name = {c.name: c for c in new}
    renamed_to: set[str] = set()
    changes: list[SchemaChange] = []
    for pos, oc in enumerate(old):
        nc = new_by_name.get(oc.name)
        if nc is None:
            cand = new[pos] if pos < len(new) else None
            if cand is not None and cand.name not in old_names and \
                    (cand.type_oid, cand.typmod) == (oc.type_oid, oc.typmod):
                renamed_to.add(cand.name)
                changes.append(SchemaChange("rename_column", oc.name,
                                            f"column {oc.name!r} was renamed to {cand.name!r}"))
            else:
                changes.append(SchemaChange("drop_column", oc.name,
                                            f"column {oc.name!r} was dropped"))
        elif (nc.type_oid, nc.typmod) != (oc.type_oid, oc.typmod):
            changes.append(SchemaChange(
                "change_type", oc.name,
                f"column {oc.name!r} changed type from {oc.type_sql} to {nc.type_sql}"))
    for nc in new:
        if nc.name not in old_names and nc.name not in renamed_to:
            required = nc.name in not_null
            kind = "add_required_column" if required else "add_nullable_column"
            changes.append(SchemaChange(kind, nc.name, f"column {nc.name!r} {nc.type_sql} was added"
                                        + (" (NOT NULL)" if required else ""), nc))
    return changes
