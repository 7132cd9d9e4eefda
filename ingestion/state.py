"""Platform state in landing schema ``tidemark``: checkpoints, replicated tables, schema history,
dead letters, paused changes and duplicate-event counts.

Every function here takes an open psycopg 3 connection and runs inside the caller's transaction.
All objects are created if missing (tests and fresh stacks start from empty databases).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingestion.ddl_locks import TABLES as LOCK_WAIT_TABLES
from ingestion.dead_letter_counts import TABLES as DEAD_LETTER_COUNT_TABLES
from ingestion.dead_letter_counts import counts_installed, ensure_counts
from ingestion.errors import StateUpgradeError
from ingestion.freshness import TABLES as FRESHNESS_TABLES
from ingestion.freshness import record_sample
from ingestion.grants_lock import hold_off_grants
from ingestion.lsn import str_to_lsn
from ingestion.names import CHANGELOG_SCHEMA, STATE_SCHEMA
from ingestion.partitions import TABLES as PARTITION_TABLES
from ingestion.type_forms import TABLES as TYPE_FORM_TABLES
from ingestion.watermarks import TABLES as WATERMARK_TABLES

log = logging.getLogger("tidemark.ingestion")

_STATE_TABLES = {
    "checkpoints": """
        source text primary key,
        slot_name text not null,
        publication text not null,
        lsn pg_lsn,
        snapshot_lsn pg_lsn,
        snapshot_done_at timestamptz,
        last_commit_at timestamptz,
        last_applied_at timestamptz,
        last_lag_ms double precision,
        rows_applied bigint not null default 0,
        rows_per_s double precision,
        updated_at timestamptz not null default now()""",
    "replicated_tables": """
        source text not null,
        table_name text not null,
        source_schema text not null,
        source_table text not null,
        source_oid bigint,
        columns jsonb not null,
        key_columns text[] not null,
        version integer not null default 1,
        paused_at timestamptz,
        paused_reason text,
        paused_lsn pg_lsn,
        snapshot_lsn pg_lsn,
        auto_resync boolean not null default false,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        primary key (source, table_name)""",
    "schema_history": """
        id bigserial primary key,
        source text not null,
        table_name text not null,
        lsn pg_lsn,
        change text not null,
        column_name text,
        detail text not null,
        action text not null,
        recorded_at timestamptz not null default now()""",
    "dead_letters": """
        id bigserial primary key,
        source text not null,
        table_name text not null,
        lsn pg_lsn not null,
        commit_lsn pg_lsn not null,
        seq integer not null,
        op text not null,
        reason text not null,
        violations jsonb not null default '[]',
        contract_version text,
        raw_row jsonb not null,
        commit_at timestamptz,
        txid bigint,
        first_seen_at timestamptz not null default now(),
        replayed_at timestamptz,
        replay_result text,
        unique (source, table_name, commit_lsn, seq)""",
    "paused_changes": """
        source text not null,
        table_name text not null,
        commit_lsn pg_lsn not null,
        seq integer not null,
        lsn pg_lsn not null,
        op text not null,
        commit_at timestamptz,
        txid bigint,
        row_data jsonb,
        old_data jsonb,
        primary key (source, table_name, commit_lsn, seq)""",
    "duplicate_events": """
        source text not null,
        table_name text not null,
        dropped bigint not null default 0,
        last_dropped_at timestamptz,
        primary key (source, table_name)""",
    **DEAD_LETTER_COUNT_TABLES,
    **WATERMARK_TABLES,
    **FRESHNESS_TABLES,
    **LOCK_WAIT_TABLES,
    **PARTITION_TABLES,
    **TYPE_FORM_TABLES,
}


_ADDED_COLUMNS = (("replicated_tables", "snapshot_lsn", "pg_lsn"),
                  ("replicated_tables", "auto_resync", "boolean not null default false"),
                  ("checkpoints", "landing_identity", "text"),
                  ("checkpoints", "source_identity", "text"),
                  ("dead_letter_counts", "resolved", "bigint not null default 0"))
"""Columns added to state tables after their first release: added to older landings."""

_INDEXES = (("dead_letters_waiting_lsn", "dead_letters",
             "(source, table_name, commit_lsn, seq) where replayed_at is null"),
            ("dead_letters_waiting_seen", "dead_letters",
             "(source, first_seen_at, id) where replayed_at is null"),
            ("dead_letters_seen", "dead_letters", "(source, first_seen_at, id)"),
            ("dead_letters_at", "dead_letters", "(source, (coalesce(commit_at, first_seen_at)))"))
"""Indexes of the state tables (name, table, definition): created with them and added to older
landings. ``dead_letters_waiting_lsn`` lets a replay find the letters not yet replayed of a
source or table in a small index, not in the whole queue with its raw rows, which grows with
history (the counts status, the ``dead_letters`` check and its sensors read every minute are
kept as they change: ``ingestion.dead_letter_counts``); in commit order, it gives `tidemark
ingest prune` a table's oldest waiting letter as its first entry (the unique index of every
letter walked past the resolved ones first: 2 s a table at a week of the 10x demo's letters,
bench/RESULTS.md e36). ``dead_letters_waiting_seen`` and ``dead_letters_seen`` give `tidemark
dlq list` its oldest letters (waiting, or all) and `tidemark dlq purge` the letters older than
a time, as index range scans that stop after a page or a batch, however long the queue.
``dead_letters_at`` gives `dlq replay --since` the letters of its window by their time (every
waiting letter of the source was read, and every letter for its count of those replayed before:
3.3-4.7 s at a week of the 10x demo's letters; bench/dead_letter_queries.py)."""

_DROPPED_INDEXES = ("dead_letters_waiting",)
"""Indexes of older landings that one of :data:`_INDEXES` replaces (``dead_letters_waiting``:
``(source, table_name)`` of the waiting letters, before round 36)."""


def ensure_state(conn: psycopg.Connection, source: str, *, read_only: bool = False) -> None:
    """Create schemas ``tidemark``, ``cdc``, ``<source>`` and the state tables if missing, and
    upgrade an older landing's (added columns, indexes, the letter counts).

    Runs in its own short transaction when the connection is in autocommit mode, otherwise in the
    caller's transaction (a savepoint), under an advisory lock that serialises concurrent
    callers.

    Args:
        conn: landing connection.
        source: source name.
        read_only: the caller only reads (status, ``dlq list``): a role that may not upgrade
            an older landing's state reads it as it is (what it lacks is read the older way,
            or said), with a warning; the next writer (``tidemark up``, ``ingest run``)
            upgrades it.

    Raises:
        StateUpgradeError: the role may not create or upgrade the state, and the caller
            writes, or the state tables are missing.
    """
    # The catalogs, not information_schema: it shows only what the role has privileges on.
    exists = conn.execute(
        "select count(*) from pg_tables where schemaname = %s and tablename = any(%s)",
        (STATE_SCHEMA, list(_STATE_TABLES))).fetchone()[0]
    added = conn.execute(
        "select count(*) from pg_attribute a join pg_class c on c.oid = a.attrelid join"
        " pg_namespace n on n.oid = c.relnamespace where n.nspname = %s and not a.attisdropped"
        " and (c.relname, a.attname) in (select * from unnest(%s::text[], %s::text[]))",
        (STATE_SCHEMA, [t for t, _, _ in _ADDED_COLUMNS], [c for _, c, _ in _ADDED_COLUMNS])
    ).fetchone()[0]
    indexed = conn.execute(
        "select count(*) from pg_indexes where schemaname = %s and indexname = any(%s)",
        (STATE_SCHEMA, [name for name, _, _ in _INDEXES])).fetchone()[0]
    have_source = conn.execute("select 1 from pg_namespace where nspname = %s",
                               (source,)).fetchone()
    if (exists == len(_STATE_TABLES) and added == len(_ADDED_COLUMNS)
            and indexed == len(_INDEXES) and (have_source or read_only)
            and counts_installed(conn)):
        # A reader needs no mirror schema of its own: creating it would run the whole DDL,
        # whose ALTER TABLEs on the state tables wait for a running landing transaction (a
        # schema change's backfill: `tidemark status` waited for it, round 38)
        return
    try:
        _create_or_upgrade(conn, source)
    except psycopg.errors.InsufficientPrivilege as exc:
        role = conn.info.user
        if read_only and exists:
            log.warning("The landing's state (schema %s) is older than this Tidemark, and role "
                        "%s may not upgrade it (%s): read as it is. The next `tidemark up` or "
                        "`tidemark ingest run` upgrades it.", STATE_SCHEMA, role,
                        exc.diag.message_primary)
            return
        what = "older than this Tidemark" if exists else "not created yet"
        raise StateUpgradeError(
            f"The landing's state (schema {STATE_SCHEMA}) is {what}, and role {role} may not "
            f"{'upgrade' if exists else 'create'} it ({exc.diag.message_primary}). Run "
            f"`tidemark up` or `tidemark ingest run` once (they upgrade it as the landing's "
            f"owner), or run this command with TIDEMARK_LANDING_URL of the role that owns "
            f"schema {STATE_SCHEMA}.") from exc


def _create_or_upgrade(conn: psycopg.Connection, source: str) -> None:
    """The DDL of :func:`ensure_state`, in one transaction under its advisory lock."""
    # One transaction (a savepoint in the caller's): on an autocommit connection the lock
    # would end with its own statement, and two processes starting at once (`ingest run` and
    # `ingest status`) raced into "duplicate key ... pg_type_typname_nsp_index".
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('tidemark:state-ddl'))")
        hold_off_grants(conn)
        for schema in (STATE_SCHEMA, CHANGELOG_SCHEMA, source):
            conn.execute(sql.SQL("create schema if not exists {}").format(
                sql.Identifier(schema)))
        for name, body in _STATE_TABLES.items():
            conn.execute(sql.SQL("create table if not exists {}.{} ({})").format(
                sql.Identifier(STATE_SCHEMA), sql.Identifier(name), sql.SQL(body)))
        for table, column, type_sql in _ADDED_COLUMNS:
            conn.execute(sql.SQL("alter table {}.{} add column if not exists {} {}").format(
                sql.Identifier(STATE_SCHEMA), sql.Identifier(table), sql.Identifier(column),
                sql.SQL(type_sql)))
        for name in _DROPPED_INDEXES:
            conn.execute(sql.SQL("drop index if exists {}.{}").format(
                sql.Identifier(STATE_SCHEMA), sql.Identifier(name)))
        for name, table, definition in _INDEXES:
            conn.execute(sql.SQL("create index if not exists {} on {}.{} {}").format(
                sql.Identifier(name), sql.Identifier(STATE_SCHEMA), sql.Identifier(table),
                sql.SQL(definition)))
        ensure_counts(conn)


@dataclass
class Checkpoint:
    """Where a source's ingestion stands.

    Attributes:
        source: source name.
        slot_name: its replication slot.
        publication: its publication.
        lsn: end LSN of the last applied source transaction (None before the snapshot).
        snapshot_lsn: the consistent point of the initial snapshot.
        snapshot_done: whether the initial snapshot is in landing.
        last_commit_at: source commit time of the last applied transaction.
    """

    source: str
    slot_name: str
    publication: str
    lsn: int | None
    snapshot_lsn: int | None
    snapshot_done: bool
    last_commit_at: datetime | None


def load_checkpoint(conn: psycopg.Connection, source: str) -> Checkpoint | None:
    """Return the checkpoint of ``source``, or None if it never ran."""
    row = conn.execute(
        "select slot_name, publication, lsn::text, snapshot_lsn::text,"
        " snapshot_done_at is not null, last_commit_at"
        " from tidemark.checkpoints where source = %s", (source,)).fetchone()
    if row is None:
        return None
    return Checkpoint(source, row[0], row[1], str_to_lsn(row[2]) if row[2] else None,
                      str_to_lsn(row[3]) if row[3] else None, row[4], row[5])


def save_checkpoint(conn: psycopg.Connection, source: str, slot: str, publication: str,
                    lsn: str, commit_at: datetime | None, rows: int,
                    snapshot_lsn: str | None = None) -> None:
    """Upsert the checkpoint of ``source`` (in the caller's transaction).

    Args:
        conn: landing connection.
        source: source name.
        slot: replication slot name.
        publication: publication name.
        lsn: end LSN of the last source transaction applied by this landing transaction.
        commit_at: its source commit time (with ``snapshot_lsn``: a source time every
            transaction committed before is in the snapshot; no lag, no freshness sample).
        rows: how many changes this landing transaction applied.
        snapshot_lsn: set when this transaction completes the initial snapshot.
    """
    conn.execute(
        """
        insert into tidemark.checkpoints as c (source, slot_name, publication, lsn, snapshot_lsn,
            snapshot_done_at, last_commit_at, last_applied_at, last_lag_ms, rows_applied,
            rows_per_s, updated_at)
        values (%(source)s, %(slot)s, %(pub)s, %(lsn)s::pg_lsn, %(snap)s::pg_lsn,
            case when %(snap)s::text is not null then clock_timestamp() end, %(commit_at)s,
            clock_timestamp(), case when %(snap)s::text is null then
            extract(epoch from clock_timestamp() - %(commit_at)s) * 1000 end, %(rows)s, null,
            clock_timestamp())
        on conflict (source) do update set
            lsn = excluded.lsn,
            slot_name = excluded.slot_name,
            publication = excluded.publication,
            snapshot_lsn = coalesce(excluded.snapshot_lsn, c.snapshot_lsn),
            snapshot_done_at = coalesce(excluded.snapshot_done_at, c.snapshot_done_at),
            last_commit_at = coalesce(excluded.last_commit_at, c.last_commit_at),
            last_applied_at = excluded.last_applied_at,
            last_lag_ms = coalesce(excluded.last_lag_ms, c.last_lag_ms),
            rows_applied = c.rows_applied + excluded.rows_applied,
            rows_per_s = case
                when excluded.rows_applied = 0 then c.rows_per_s
                when c.last_applied_at is null then null
                else 0.8 * coalesce(c.rows_per_s, 0) + 0.2 * excluded.rows_applied
                     / greatest(extract(epoch from excluded.last_applied_at - c.last_applied_at),
                                0.001) end,
            updated_at = excluded.updated_at
        """,
        {"source": source, "slot": slot, "pub": publication, "lsn": lsn, "snap": snapshot_lsn,
         "commit_at": commit_at, "rows": rows},
    )
    if snapshot_lsn is None:
        record_sample(conn, source, commit_at)


def record_schema_change(conn: psycopg.Connection, source: str, table: str, lsn: str | None,
                         change: str, column: str | None, detail: str, action: str) -> None:
    """Append one row to ``tidemark.schema_history``."""
    conn.execute(
        "insert into tidemark.schema_history (source, table_name, lsn, change, column_name,"
        " detail, action) values (%s, %s, %s::pg_lsn, %s, %s, %s, %s)",
        (source, table, lsn, change, column, detail, action))


def add_duplicates(conn: psycopg.Connection, source: str, table: str, dropped: int) -> None:
    """Add ``dropped`` to the duplicate-event count of a table."""
    conn.execute(
        "insert into tidemark.duplicate_events as d (source, table_name, dropped, last_dropped_at)"
        " values (%s, %s, %s, clock_timestamp()) on conflict (source, table_name) do update set"
        " dropped = d.dropped + excluded.dropped, last_dropped_at = excluded.last_dropped_at",
        (source, table, dropped))


def jsonb(value: Any) -> Jsonb:
    """Wrap a Python value for a jsonb parameter."""
    return Jsonb(value)
