"""Resync: rebuild one table (or everything) from a fresh snapshot, losing nothing.

One table: a temporary slot exports a snapshot at LSN P while the source's landing lock is held
(the running ingestion waits for it between transactions). The mirror is rebuilt from the source's
current shape, the changelog gains any new columns, then the raw changes kept while the table was
paused land: those committed before P in the changelog only (the snapshot already holds their
effect), those from P on through the normal applier (changelog and mirror). The table flows again.

Everything (``--all``): the slot is dropped and the checkpoint cleared; the next catch-up or run
takes a new initial snapshot of every table.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg2
import psycopg2.extras
from psycopg import sql

from ingestion.applier import Applier
from ingestion.catalog import drop_slot, key_columns, table_columns
from ingestion.engine import catch_up
from ingestion.errors import TableNotFoundError
from ingestion.lsn import lsn_to_str, str_to_lsn
from ingestion.names import publication_name, slot_name
from ingestion.relations import RelationTracker
from ingestion.snapshot import create_slot_exporting, open_snapshot, snapshot_tables
from ingestion.state import ensure_state, record_schema_change
from ingestion.tables import TableInfo, create_landing_tables, save_table

log = logging.getLogger("tidemark.ingestion")


def resync(source_dsn: str, landing_dsn: str, source: str = "shop", table: str | None = None,
           *, contracts: Any = None, setup_dsn: str | None = None) -> str:
    """Rebuild ``table`` from a fresh snapshot, or every table when ``table`` is None.

    Args:
        source_dsn: source URL (REPLICATION + SELECT).
        landing_dsn: landing URL.
        source: source name.
        table: landing table name, or None for a full re-snapshot.
        contracts: contract set for validating the rebuilt rows, or None.
        setup_dsn: source admin URL (publication, dropping the slot).

    Returns:
        A sentence saying what was done.

    Raises:
        TableNotFoundError: the table is not replicated for this source.
    """
    if table is None:
        drop_slot(setup_dsn or source_dsn, slot_name(source))
        with psycopg.connect(landing_dsn, autocommit=True) as conn:
            ensure_state(conn, source)
            conn.execute("delete from tidemark.checkpoints where source = %s", (source,))
        stats = catch_up(source_dsn, landing_dsn, source, contracts=contracts,
                         setup_dsn=setup_dsn)
        return (f"Source {source}: new slot and snapshot of {stats.snapshot_rows} rows at "
                f"{stats.lsn}.")
    return _resync_table(source_dsn, landing_dsn, source, table, contracts)


def _resync_table(source_dsn: str, landing_dsn: str, source: str, table: str,
                  contracts: Any) -> str:
    with psycopg.connect(landing_dsn) as land, \
            psycopg.connect(source_dsn, autocommit=True) as src_cat:
        ensure_state(land, source)
        land.commit()
        applier = Applier(land, source, slot_name(source), publication_name(source), contracts)
        tracker = RelationTracker(applier, src_cat, source)
        applier.begin()
        tracker.load()
        info = applier.tables.get(table)
        if info is None:
            known = ", ".join(sorted(applier.tables)) or "none yet"
            raise TableNotFoundError(f"Table {table!r} is not replicated for source {source!r} "
                                     f"(known: {known}).")
        oid_row = src_cat.execute("select to_regclass(%s)::oid::int", (
            sql.Identifier(info.source_schema, info.source_table).as_string(src_cat),)).fetchone()
        if oid_row[0] is None:
            raise TableNotFoundError(f"Source table {info.source_schema}.{info.source_table} no "
                                     f"longer exists; nothing to resync.")
        repl = psycopg2.connect(source_dsn,
                                connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            lsn, snapshot = create_slot_exporting(repl.cursor(), f"{slot_name(source)}_resync",
                                                  temporary=True)
            snap = open_snapshot(source_dsn, snapshot)
            try:
                _rebuild(applier, tracker, info, oid_row[0])
                early = _changelog_only(land, info, source, lsn)
                rows = snapshot_tables(snap, applier, tracker, publication_name(source), lsn,
                                       only={table})
                late = _replay_late(applier, info, source, lsn)
            finally:
                snap.close()
            land.execute("delete from tidemark.paused_changes where source = %s and"
                         " table_name = %s", (source, table))
            record_schema_change(land, source, table, lsn_to_str(lsn), "resync", None,
                                 f"rebuilt from snapshot ({rows} rows); {early + late} kept "
                                 f"changes landed", "resynced")
            applier.flush_all()
            land.commit()
        finally:
            repl.close()
    log.info("resynced %s.%s at %s", source, table, lsn_to_str(lsn))
    return (f"Table {source}.{table} rebuilt from a snapshot at {lsn_to_str(lsn)}: {rows} rows, "
            f"{early + late} changes kept while paused landed; it flows again.")


def _rebuild(applier: Applier, tracker: RelationTracker, info: TableInfo, oid: int) -> None:
    """Recreate the mirror in the source's current shape; widen the changelog to match."""
    conn = applier.conn
    cols = tracker._columns([(n, t, m) for n, t, m, _ in table_columns(tracker.source_conn, oid)])
    have = {r[0]: r[1] for r in conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid ="
        " %s::regclass and attnum > 0 and not attisdropped",
        (info.changelog.as_string(conn),))}
    conn.execute(sql.SQL("drop table if exists {}").format(info.mirror))
    info.columns, info.key, info.source_oid = cols, key_columns(tracker.source_conn, oid), oid
    info.refresh()
    info.paused_reason = None
    info.version += 1
    create_landing_tables(conn, info)
    for col in cols:
        ident = sql.Identifier(col.name)
        if col.name not in have:
            conn.execute(sql.SQL("alter table {} add column {} {}").format(
                info.changelog, ident, sql.SQL(col.type_sql)))
        elif have[col.name] != col.type_sql:
            aside = sql.Identifier(f"{col.name}__v{info.version - 1}"[:63])
            conn.execute(sql.SQL("alter table {} rename column {} to {}").format(
                info.changelog, ident, aside))
            conn.execute(sql.SQL("alter table {} add column {} {}").format(
                info.changelog, ident, sql.SQL(col.type_sql)))
    save_table(conn, info)
    applier.tables[info.name] = info


def _changelog_only(conn: psycopg.Connection, info: TableInfo, source: str, lsn: int) -> int:
    """Kept changes committed before the snapshot: into the changelog only."""
    cols = sql.SQL(", ").join(map(sql.Identifier, info.column_names))
    cur = conn.execute(sql.SQL(
        "insert into {} ({}, _op, _lsn, _commit_lsn, _seq, _commit_at, _txid)"
        " select (jsonb_populate_record(null::{}, coalesce(p.row_data, p.old_data))).*,"
        " p.op, p.lsn, p.commit_lsn, p.seq, p.commit_at, p.txid from tidemark.paused_changes p"
        " where p.source = %s and p.table_name = %s and p.commit_lsn < %s::pg_lsn"
        " order by p.commit_lsn, p.seq on conflict do nothing"
    ).format(info.changelog, cols, info.mirror), (source, info.name, lsn_to_str(lsn)))
    return cur.rowcount


def _replay_late(applier: Applier, info: TableInfo, source: str, lsn: int) -> int:
    """Kept changes from the snapshot on: through the applier (changelog and mirror)."""
    rows = applier.conn.execute(
        "select commit_lsn::text, seq, lsn::text, op, commit_at, txid, row_data, old_data"
        " from tidemark.paused_changes where source = %s and table_name = %s and"
        " commit_lsn >= %s::pg_lsn order by commit_lsn, seq",
        (source, info.name, lsn_to_str(lsn))).fetchall()
    names = info.column_names

    def values(data: dict | None) -> list | None:
        if data is None:
            return None
        return [None if data.get(c) is None else str(data[c]).encode() for c in names]

    for commit_lsn, seq, change_lsn, op, commit_at, txid, new, old in rows:
        applier.start_source_txn(str_to_lsn(commit_lsn), commit_at, txid)
        if op == "t":
            applier.truncate([info], str_to_lsn(change_lsn), seq)
        else:
            applier.add(info, op, values(new), values(old), str_to_lsn(change_lsn), seq,
                        "O" if old is not None else None)
    return len(rows)
