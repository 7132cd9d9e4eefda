"""Replicated tables in landing: their shape, the mirror and changelog DDL, and the registry
``tidemark.replicated_tables`` that remembers both across restarts.

A table with a key (primary key, else replica identity index) has a mirror with that primary key;
a keyless table (``REPLICA IDENTITY FULL``) has a mirror without one, kept with bag semantics.
Type names come from the source's ``format_type`` (already quoted by PostgreSQL); every identifier
is composed with ``psycopg.sql.Identifier``, every value is bound or a ``sql.Literal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from ingestion.errors import ReservedColumnError
from ingestion.grants_lock import hold_off_grants
from ingestion.lsn import lsn_to_str, str_to_lsn
from ingestion.names import CHANGELOG_SCHEMA, changelog_table_name

META_COLUMNS = ("_op", "_lsn", "_commit_lsn", "_seq", "_commit_at", "_txid", "_ingested_at")

RESNAPSHOT_SEQ = -(2**31)
"""``_seq`` of the ``t`` row before a table's rows are read again (:func:`mark_resnapshot`)."""
SNAPSHOT_SEQ = RESNAPSHOT_SEQ + 1
"""``_seq`` before a snapshot's first row: snapshot rows sort before a source transaction
committed at the snapshot's LSN, whose changes take positive ``_seq`` values."""


@dataclass
class ColumnInfo:
    """A replicated column.

    Attributes:
        name: column name (same in source, mirror and changelog).
        type_oid: source type OID.
        typmod: source type modifier.
        type_sql: the landing type, as ``format_type`` prints it.
        attnum: its ``attnum`` on the source when landing last read the catalog (None: not
            known, a registry from before it was kept); a new one means the column was dropped
            and added again (:func:`ingestion.catalog.column_attnums`).
    """

    name: str
    type_oid: int
    typmod: int
    type_sql: str
    attnum: int | None = None

    def as_json(self, retired: bool = False) -> dict:
        """The registry's JSON form."""
        out = {"name": self.name, "type_oid": self.type_oid, "typmod": self.typmod,
               "type": self.type_sql}
        if self.attnum is not None:
            out["attnum"] = self.attnum
        if retired:
            out["retired"] = True
        return out


@dataclass
class TableInfo:
    """A replicated table as landing knows it.

    Attributes:
        source: source name (the mirror's schema).
        name: landing table name.
        source_schema: schema on the source.
        source_table: table name on the source.
        source_oid: relation OID on the source.
        columns: the columns the stream sends, in source order.
        key: key column names (primary key, else replica identity index); empty for a keyless
            table (bag semantics).
        version: bumped at every DDL change of the landing tables.
        paused_reason: why the table is paused, or None when it flows.
        retired: columns dropped on the source that landing keeps (NULL from the drop on), as
            a contract with ``full`` compatibility allows.
        snapshot_lsn: the LSN of the table's last resync snapshot: changes committed before it
            go to the changelog only (the snapshot holds their effect).
        paused_lsn: commit LSN of the first change kept while paused.
        auto_resync: resync the table by itself (a column added with a volatile default).
        stream_positions: set on a view of the table for a stream shape older than its
            snapshot: for each column, its position in the stream's rows (-1: not sent).
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
    retired: list[ColumnInfo] = field(default_factory=list)
    snapshot_lsn: int = 0
    paused_lsn: int | None = None
    auto_resync: bool = False
    stream_positions: list[int] | None = None
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

    def for_stream_shape(self, names: list[str]) -> TableInfo:
        """This table as seen through rows of an older stream shape (columns ``names``): the
        view maps each row onto the current columns (columns not sent are NULL)."""
        if names == self.column_names:
            return self
        view = replace(self)
        view.stream_positions = [names.index(c) if c in names else -1
                                 for c in self.column_names]
        return view

    def project(self, values: list | None) -> list | None:
        """A stream row mapped onto the columns (see :meth:`for_stream_shape`)."""
        if values is None or self.stream_positions is None:
            return values
        return [values[i] if i >= 0 else None for i in self.stream_positions]

    def pause(self, reason: str, lsn: int | None) -> None:
        """Mark the table paused (the caller saves it)."""
        self.paused_reason = reason
        if self.paused_lsn is None:
            self.paused_lsn = lsn


CHANGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_op", "text not null"), ("_lsn", "pg_lsn not null"), ("_commit_lsn", "pg_lsn not null"),
    ("_seq", "integer not null"), ("_commit_at", "timestamptz"), ("_txid", "bigint"),
    ("_ingested_at", "timestamptz not null"))
"""The changelog's change columns after the source's: (name, type and constraint)."""
CHANGE_DEFAULTS = {"_ingested_at": "clock_timestamp()"}
"""The change columns' own defaults (SQL)."""


RESERVED_PREFIX = "_tidemark_"
"""Names landing's staging tables use for their own columns start with this."""


def reserved_columns(info: TableInfo) -> str | None:
    """Why landing cannot hold a table's columns (names it uses itself), or None."""
    taken = [c.name for c in info.columns
             if c.name in META_COLUMNS or c.name.startswith(RESERVED_PREFIX)]
    if not taken:
        return None
    first = taken[0]
    table = ".".join('"' + n.replace('"', '""') + '"' for n in (info.source_schema,
                                                              info.source_table))
    return (f"source column{'s' if len(taken) > 1 else ''} {', '.join(map(repr, taken))} of "
            f"{info.source_schema}.{info.source_table} {'have' if len(taken) > 1 else 'has'} "
            f"the name of a column landing adds to the changelog ({', '.join(META_COLUMNS)}, "
            f"{RESERVED_PREFIX}*), so mirror and changelog cannot hold the table; rename it on "
            f"the source (alter table {table} rename column \"{first}\" to "
            f"\"{first.lstrip('_')}\") or leave the table out of the source's selection "
            f"(`tidemark source add ... --tables`)")


MAX_COLUMNS = 1600
"""PostgreSQL's limit of columns in a table."""

STAGING_EXTRA = 9
"""Columns the staging table has after the table's own (:data:`ingestion.batch.STAGING_META`);
the changelog has fewer (:data:`CHANGE_COLUMNS`)."""


def too_wide(info: TableInfo) -> str | None:
    """Why landing cannot hold a table that has too many columns, or None.

    The staging table (and the changelog) add Tidemark's columns after the source's, the mirror
    keeps retired columns, and no table has more than :data:`MAX_COLUMNS`: PostgreSQL refused
    the landing table with "tables can have at most 1600 columns" and stopped the whole source.
    """
    width = len(info.columns) + max(len(info.retired), STAGING_EXTRA)
    if width <= MAX_COLUMNS:
        return None
    most = MAX_COLUMNS - max(len(info.retired), STAGING_EXTRA)
    retired = f" (and {len(info.retired)} dropped on the source that landing keeps)" \
        if info.retired else ""
    return (f"{info.source_schema}.{info.source_table} has {len(info.columns)} columns"
            f"{retired}; landing adds {STAGING_EXTRA} of its own to stage its changes and "
            f"PostgreSQL allows {MAX_COLUMNS} in a table, so Tidemark takes at most {most}: "
            f"split the table on the source, or leave it out of the source's selection "
            f"(`tidemark source add ... --tables`)")


def landing_blocker(info: TableInfo) -> str | None:
    """Why landing cannot hold a table's columns (:func:`reserved_columns`,
    :func:`too_wide`), or None."""
    return reserved_columns(info) or too_wide(info)


def column_defs(columns: list[ColumnInfo]) -> sql.Composed:
    """``<name> <type>, ...`` of columns, for a CREATE TABLE."""
    # type_sql is format_type() output from the source catalog: a type name, not user input.
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type_sql)) for c in columns)


def change_column_def(name: str, default: sql.Composable | None = None) -> sql.Composed:
    """``<name> <type> [not null] [default ...]`` of a change column: ``default``, else its
    own default (:data:`CHANGE_DEFAULTS`), else none."""
    decl = dict(CHANGE_COLUMNS)[name]
    if default is None and name in CHANGE_DEFAULTS:
        default = sql.SQL(CHANGE_DEFAULTS[name])
    tail = sql.SQL("") if default is None else sql.SQL(" default {}").format(default)
    return sql.SQL("{} {}{}").format(sql.Identifier(name), sql.SQL(decl), tail)


def changelog_unique(table: sql.Identifier) -> sql.Composed:
    """The statement that adds a changelog's ``unique (_commit_lsn, _seq)``: a replayed change
    never produces a second changelog row."""
    return sql.SQL("alter table {} add unique (_commit_lsn, _seq)").format(table)


def create_landing_tables(conn: psycopg.Connection, info: TableInfo,
                          changelog: bool = True) -> None:
    """Create the mirror and changelog of a table if missing (in the caller's transaction).

    The mirror has the table's primary key; a keyless table's mirror has none. With
    ``changelog=False`` only the mirror (a snapshot stages its changelog narrower:
    :func:`ingestion.snapcopy.stage_tables`).
    """
    hold_off_grants(conn)
    reason = landing_blocker(info)
    if reason is not None:
        raise ReservedColumnError(f"Cannot create the landing tables of {info.qualified}: "
                                  f"{reason}.")
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(info.source)))
    if info.key:
        key = sql.SQL(", primary key ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, info.key)))
    else:
        key = sql.SQL("")
    conn.execute(sql.SQL("create table if not exists {} ({}{})").format(
        info.mirror, column_defs(info.columns + info.retired), key))
    if changelog:
        conn.execute(sql.SQL("create table if not exists {} ({}, {}, unique (_commit_lsn, _seq))"
                             ).format(info.changelog, column_defs(info.columns),
                                      sql.SQL(", ").join(change_column_def(name)
                                                         for name, _ in CHANGE_COLUMNS)))


def create_idempotency_index(conn: psycopg.Connection, info: TableInfo, column: str) -> None:
    """Index the mirror on a contract's idempotency key, if missing (the dedup of streamed
    events looks keys up in it). Named ``<table>__<column>_idem``, in the mirror's schema."""
    hold_off_grants(conn)
    conn.execute(sql.SQL("create index if not exists {} on {} ({})").format(
        sql.Identifier(f"{info.name}__{column}_idem"[:63]), info.mirror, sql.Identifier(column)))


def add_column(conn: psycopg.Connection, info: TableInfo, column: ColumnInfo,
               existing_value: str | None = None) -> None:
    """Add a column to mirror and changelog.

    Args:
        conn: landing connection (in the caller's transaction).
        info: the table.
        column: the new column.
        existing_value: the text form of the value the mirror's existing rows get (what the
            source's existing rows read, e.g. a constant default), or None for NULL. Given as a
            default that is dropped again at once, so the mirror is not rewritten.
    """
    hold_off_grants(conn)
    ident, type_sql = sql.Identifier(column.name), sql.SQL(column.type_sql)
    if existing_value is None:
        conn.execute(sql.SQL("alter table {} add column if not exists {} {}").format(
            info.mirror, ident, type_sql))
    else:
        conn.execute(sql.SQL("alter table {} add column {} {} default {}::{}").format(
            info.mirror, ident, type_sql, sql.Literal(existing_value), type_sql))
        conn.execute(sql.SQL("alter table {} alter column {} drop default").format(
            info.mirror, ident))
    conn.execute(sql.SQL("alter table {} add column if not exists {} {}").format(
        info.changelog, ident, type_sql))


def widen_column(conn: psycopg.Connection, info: TableInfo, column: ColumnInfo) -> None:
    """Give a column of mirror and changelog a wider type (values convert as on the source),
    and convert the value of the table's waiting dead letters the same way.

    A letter holds its row as the source's text of the old type, which the new type may read as
    another value than the source's conversion gives: ``0.1`` was ``real`` 0.1, which
    ``double precision`` holds as ``0.10000000149011612``; ``char(3)`` ``'a  '`` is ``'a'`` as
    ``varchar``. Letters of the table's current snapshot only (older ones are void and may hold
    another type's text); the caller writes the letters not written yet first.
    """
    hold_off_grants(conn)
    for table in (info.mirror, info.changelog):
        conn.execute(sql.SQL("alter table {} alter column {} type {}").format(
            table, sql.Identifier(column.name), sql.SQL(column.type_sql)))
    old = next(c for c in info.columns if c.name == column.name)
    conn.execute(sql.SQL(
        "update tidemark.dead_letters set raw_row = jsonb_set(raw_row, array[%(c)s],"
        " to_jsonb(((raw_row ->> %(c)s)::{}::{})::text)) where source = %(s)s and table_name ="
        " %(t)s and replayed_at is null and commit_lsn >= %(snap)s::pg_lsn"
        " and raw_row ->> %(c)s is not null").format(sql.SQL(old.type_sql),
                                                    sql.SQL(column.type_sql)),
        {"c": column.name, "s": info.source, "t": info.name,
         "snap": lsn_to_str(info.snapshot_lsn or 0)})


def retire_column(conn: psycopg.Connection, info: TableInfo, name: str) -> None:
    """Keep a column dropped on the source, NULL in the mirror from now on."""
    hold_off_grants(conn)
    conn.execute(sql.SQL("update {} set {} = null where {} is not null").format(
        info.mirror, sql.Identifier(name), sql.Identifier(name)))


def keep_dropped_column(conn: psycopg.Connection, info: TableInfo, name: str) -> None:
    """Keep a column dropped on the source as it is (a table without a contract): its rows keep
    their values, rows written from now on have NULL there (:func:`ingestion.merge.
    conflict_action`), so it must take NULL (a key column's NOT NULL goes)."""
    hold_off_grants(conn)
    not_null = conn.execute("select attnotnull from pg_attribute where attrelid ="
                            " %s::regclass and attname = %s",
                            (info.mirror.as_string(conn), name)).fetchone()
    if not_null and not_null[0]:
        conn.execute(sql.SQL("alter table {} alter column {} drop not null").format(
            info.mirror, sql.Identifier(name)))


def set_mirror_key(conn: psycopg.Connection, mirror: sql.Identifier, key: list[str]) -> None:
    """Replace the mirror's primary key by ``key`` (none when empty)."""
    hold_off_grants(conn)
    name = conn.execute("select conname from pg_constraint where conrelid = %s::regclass and"
                        " contype = 'p'", (mirror.as_string(conn),)).fetchone()
    if name is not None:
        conn.execute(sql.SQL("alter table {} drop constraint {}").format(
            mirror, sql.Identifier(name[0])))
    if key:
        conn.execute(sql.SQL("alter table {} add primary key ({})").format(
            mirror, sql.SQL(", ").join(map(sql.Identifier, key))))


def mark_resnapshot(conn: psycopg.Connection, info: TableInfo, lsn: int) -> None:
    """Before a table's rows are read again (resync), write a ``t`` changelog row at the snapshot
    LSN, before the snapshot's rows: replaying the changelog then gives the snapshot's rows, not
    both copies.

    Written also when the changelog holds no rows (pruned, or every row a dead letter), as a
    source TRUNCATE's ``t`` row is: a reader that kept the rows it read earlier (a consumer of
    the changelog, replay's superseded check) learns the table was read again.
    """
    conn.execute(sql.SQL("insert into {} (_op, _lsn, _commit_lsn, _seq, _commit_at) values"
                         " ('t', %s, %s, %s, now()) on conflict do nothing"
                         ).format(info.changelog),
                 (lsn_to_str(lsn), lsn_to_str(lsn), RESNAPSHOT_SEQ))


def save_table(conn: psycopg.Connection, info: TableInfo) -> None:
    """Insert or update the registry row of a table."""
    from psycopg.types.json import Jsonb

    if info.paused_reason is None:
        info.paused_lsn = None
        info.auto_resync = False
    conn.execute(
        """
        insert into tidemark.replicated_tables as t (source, table_name, source_schema,
            source_table, source_oid, columns, key_columns, version, paused_at, paused_reason,
            paused_lsn, snapshot_lsn, auto_resync)
        values (%s, %s, %s, %s, %s, %s, %s, %s,
            case when %s::text is null then null else clock_timestamp() end, %s, %s::pg_lsn,
            %s::pg_lsn, %s)
        on conflict (source, table_name) do update set
            source_oid = excluded.source_oid, columns = excluded.columns,
            key_columns = excluded.key_columns, version = excluded.version,
            paused_at = case when excluded.paused_reason is null then null
                             else coalesce(t.paused_at, excluded.paused_at) end,
            paused_reason = excluded.paused_reason, paused_lsn = excluded.paused_lsn,
            snapshot_lsn = excluded.snapshot_lsn, auto_resync = excluded.auto_resync,
            updated_at = clock_timestamp()
        """,
        (info.source, info.name, info.source_schema, info.source_table, info.source_oid,
         Jsonb([c.as_json() for c in info.columns] + [c.as_json(True) for c in info.retired]),
         info.key, info.version, info.paused_reason, info.paused_reason,
         None if info.paused_lsn is None else lsn_to_str(info.paused_lsn),
         lsn_to_str(info.snapshot_lsn), info.auto_resync))


def load_tables(conn: psycopg.Connection, source: str) -> dict[str, TableInfo]:
    """All registered tables of a source, by landing table name."""
    out = {}
    for row in conn.execute(
            "select table_name, source_schema, source_table, source_oid, columns, key_columns,"
            " version, paused_reason, paused_lsn::text, snapshot_lsn::text, auto_resync"
            " from tidemark.replicated_tables where source = %s", (source,)):
        cols = [ColumnInfo(c["name"], c["type_oid"], c["typmod"], c["type"], c.get("attnum"))
                for c in row[4] if not c.get("retired")]
        retired = [ColumnInfo(c["name"], c["type_oid"], c["typmod"], c["type"]) for c in row[4]
                   if c.get("retired")]
        out[row[0]] = TableInfo(source, row[0], row[1], row[2], row[3] or 0, cols, list(row[5]),
                                row[6], row[7], retired,
                                str_to_lsn(row[9]) if row[9] else 0,
                                str_to_lsn(row[8]) if row[8] else None, bool(row[10]))
    return out


def find_table(tables: Mapping[str, TableInfo], name: str) -> str | None:
    """The landing name of a table given as its landing name (``app__orders``) or as the
    source's ``schema.table`` (``app.orders``; ``orders`` for schema ``public``), else None."""
    if name in tables:
        return name
    schema, _, table = name.rpartition(".")
    for landing, info in tables.items():
        if info.source_table == table and info.source_schema == (schema or "public"):
            return landing
    return None


def known_tables(tables: Mapping[str, TableInfo]) -> str:
    """The tables of a source for an error message: ``landing (schema.table)`` each."""
    return ", ".join(f"{n} ({i.source_schema}.{i.source_table})" if n != i.source_table else n
                     for n, i in sorted(tables.items())) or "none yet"


def table_versions(conn: psycopg.Connection, source: str) -> dict[str, tuple[int, bool]]:
    """(version, paused) of every registered table: cheap, read in every landing transaction."""
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        "select table_name, version, paused_at is not null from tidemark.replicated_tables"
        " where source = %s", (source,))}
