"""Resync: rebuild one table (or everything) from a fresh snapshot, losing nothing.

One table: a temporary slot exports a snapshot at LSN P while the source's landing lock is held
(the running ingestion waits for it between transactions). The mirror is rebuilt from the source's
current shape, the changelog gains any new columns, then the raw changes kept while the table was
paused land: those committed before P in the changelog only (the snapshot already holds their
effect), those from P on through the normal applier (changelog and mirror). The table flows again.

While the running ingestion catches up to P, the table's changes committed before P reach its
changelog only (``snapshot_lsn`` in the registry). The snapshot's rows follow a ``t`` changelog row
at P, so replaying the changelog gives the snapshot, not the old rows plus the snapshot.

Everything (``--all``): paused tables are reshaped to the source and unpaused (their kept changes
land in the changelog), the slot is dropped and the checkpoint cleared; the catch-up then takes a
new initial snapshot of every table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from ingestion.applier import Applier
from ingestion.catalog import copy_blocker, drop_slot, key_columns, published_tables, table_columns
from ingestion.changelog_lock import lock_for_resync
from ingestion.decoder import UNCHANGED
from ingestion.dependents import drop_advice, drop_statements
from ingestion.engine import catch_up
from ingestion.errors import (
    ResyncBlockedError,
    SetupError,
    SnapshotRewrittenError,
    TableNotFoundError,
)
from ingestion.grants_lock import hold_off_grants
from ingestion.letter_indexes import DEAD_LETTERS, drop_letter_index, stale_letter_index
from ingestion.lsn import lsn_to_str, str_to_lsn
from ingestion.names import publication_name, slot_name
from ingestion.partitions import save_partitions, source_partitions
from ingestion.relations import RelationTracker, resync_hint
from ingestion.session_settings import (
    check_landing_triggers,
    pinned_dsn,
    replication_connection,
)
from ingestion.snapshot import (
    create_slot_exporting,
    open_snapshot,
    snapshot_tables,
)
from ingestion.sources import record_error
from ingestion.standby import await_replay
from ingestion.state import ensure_state, record_schema_change
from ingestion.tables import (
    ColumnInfo,
    TableInfo,
    create_landing_tables,
    find_table,
    known_tables,
    save_table,
    set_mirror_key,
)
from ingestion.type_forms import save_forms, source_forms

_END = "FFFFFFFF/FFFFFFFF"
REWRITE_ATTEMPTS = 5  # new snapshots taken for a table rewritten after the last one

log = logging.getLogger("tidemark.ingestion")


def resync(source_dsn: str, landing_dsn: str, source: str, table: str | None = None,
           *, contracts: Any = None, setup_dsn: str | None = None) -> str:
    """Rebuild ``table`` from a fresh snapshot, or every table when ``table`` is None.

    Args:
        source_dsn: source URL (REPLICATION + SELECT).
        landing_dsn: landing URL.
        source: source name.
        table: landing table name, or None for a full re-snapshot.
        contracts: contract set for validating the rebuilt rows, or None.
        setup_dsn: source admin URL (the publication, heartbeats).

    Returns:
        A sentence saying what was done.

    Raises:
        TableNotFoundError: the table is not replicated for this source.
    """
    source_dsn = pinned_dsn(source_dsn)
    if table is None:
        drop_slot(source_dsn, slot_name(source))  # the stream's server holds the slot
        reopened = _reopen_paused(source_dsn, landing_dsn, source, contracts)
        stats = catch_up(source_dsn, landing_dsn, source, contracts=contracts,
                         setup_dsn=setup_dsn)
        record_error(landing_dsn, source, None)  # a running `ingest run` streams it again
        return (f"Source {source}: new slot and snapshot of {stats.snapshot_rows} rows at "
                f"{stats.lsn}" + (f"; paused tables rebuilt: {', '.join(reopened)}."
                                  if reopened else "."))
    return resync_table(source_dsn, landing_dsn, source, table, contracts, setup_dsn=setup_dsn)


def _reopen_paused(source_dsn: str, landing_dsn: str, source: str, contracts: Any) -> list[str]:
    """Before a full re-snapshot: give paused tables the source's shape and unpause them (their
    kept changes into the changelog), and clear the checkpoint, in one landing transaction."""
    reopened = []
    with psycopg.connect(landing_dsn) as land, \
            psycopg.connect(source_dsn, autocommit=True) as src_cat:
        ensure_state(land, source)
        applier = Applier(land, source, slot_name(source), publication_name(source), contracts)
        tracker = RelationTracker(applier, src_cat, source)
        applier.begin()
        tracker.load()
        for name, info in sorted(applier.tables.items()):
            if info.paused_reason is None:
                continue
            oid = _source_oid(src_cat, info)
            if oid is None:
                log.warning("%s: source table gone; left paused", info.qualified)
                continue
            _rebuild(applier, tracker, info, oid, 0)
            kept = _changelog_only(land, info, source, None)
            land.execute("delete from tidemark.paused_changes where source = %s and"
                         " table_name = %s", (source, name))
            record_schema_change(land, source, name, None, "resync", None,
                                 f"unpaused for a full re-snapshot; {kept} kept changes landed"
                                 f" in the changelog", "resynced")
            reopened.append(name)
        land.execute("delete from tidemark.checkpoints where source = %s", (source,))
        land.commit()
    return reopened


def _source_oid(src_cat: psycopg.Connection, info: TableInfo) -> int | None:
    return src_cat.execute("select to_regclass(%s)::oid::int", (
        sql.Identifier(info.source_schema, info.source_table).as_string(src_cat),)).fetchone()[0]


def resync_table(source_dsn: str, landing_dsn: str, source: str, table: str,
                 contracts: Any = None, keepalive: Callable[[], None] | None = None,
                 setup_dsn: str | None = None) -> str:
    """Rebuild one table from a fresh snapshot of it (see the module docstring).

    ``keepalive``: called while it waits for the mirror's lock (a streaming session that runs
    it keeps its stream alive: :class:`ingestion.ddl_locks.DdlLocks`). A source table rewritten
    after the snapshot (it would look empty to it) is resynced again from a new snapshot, up to
    :data:`REWRITE_ATTEMPTS` times. ``setup_dsn``: the source's admin URL; when the source is
    a standby (its primary), the standby first replays what the primary wrote, and the primary
    is asked for the running-transactions record the temporary slot waits for
    (:mod:`ingestion.standby`).

    Raises:
        TableNotFoundError: the table is not replicated for this source, or gone.
        ResyncBlockedError: objects built on the mirror forbid its new shape.
        SnapshotRewrittenError: the table was rewritten after every one of those snapshots.
    """
    for attempt in range(1, REWRITE_ATTEMPTS + 1):
        try:
            return _resync_table_once(source_dsn, landing_dsn, source, table, contracts,
                                      keepalive, setup_dsn)
        except SnapshotRewrittenError as exc:
            if attempt == REWRITE_ATTEMPTS:
                raise SnapshotRewrittenError(
                    f"Cannot resync {source}.{table}: {exc}, {attempt} times in a row; run "
                    f"{resync_hint(source, table)} once the source's DDL on it is done.") from exc
            log.info("resync of %s.%s: %s; taking a new snapshot", source, table, exc)
    raise AssertionError("unreachable")


def _resync_table_once(source_dsn: str, landing_dsn: str, source: str, table: str,
                       contracts: Any, keepalive: Callable[[], None] | None,
                       setup_dsn: str | None) -> str:
    source_dsn = pinned_dsn(source_dsn)
    with psycopg.connect(landing_dsn) as land, \
            psycopg.connect(source_dsn, autocommit=True) as src_cat:
        await_replay(src_cat, setup_dsn, source)  # a standby: the primary's DDL replayed
        check_landing_triggers(land)
        ensure_state(land, source)
        land.commit()
        applier = Applier(land, source, slot_name(source), publication_name(source), contracts)
        if keepalive is not None:
            applier.ddl_locks.keepalive = keepalive
        tracker = RelationTracker(applier, src_cat, source)
        applier.begin()
        tracker.load()
        found = find_table(applier.tables, table)
        if found is None:
            raise TableNotFoundError(f"Table {table!r} is not replicated for source {source!r} "
                                     f"(known: {known_tables(applier.tables)}).")
        table, info = found, applier.tables[found]
        oid = _source_oid(src_cat, info)
        if oid is None:
            raise TableNotFoundError(f"Source table {info.source_schema}.{info.source_table} no "
                                     f"longer exists; nothing to resync.")
        if oid not in {t[0] for t in published_tables(src_cat, publication_name(source))}:
            # Its copy would be empty and look healthy (seen: a table moved out of the
            # selected schemas by `alter table ... set schema`).
            raise TableNotFoundError(
                f"Source table {info.source_schema}.{info.source_table} is not in publication "
                f"{publication_name(source)}: it is outside the source's selected schemas or "
                f"tables, or has no key or replica identity (`tidemark source list` shows the "
                f"selection, the ingestion log why a table was left out); nothing to copy. "
                f"Select it and make it publishable first.")
        blocked = copy_blocker(src_cat, oid)
        if blocked is not None:
            raise SetupError(f"Cannot resync {source}.{table}: {blocked}; then run "
                             f"{resync_hint(source, table)} again.")
        leaves = source_partitions(src_cat, [oid]).get(oid)  # before the snapshot
        forms = source_forms(src_cat, [oid])[oid]
        repl = replication_connection(source_dsn)
        try:
            lsn, snapshot = create_slot_exporting(
                repl.cursor(), f"{slot_name(source)}_resync", temporary=True,
                watch_dsn=source_dsn, source=source, setup_dsn=setup_dsn)
            snap = open_snapshot(source_dsn, snapshot)
            try:
                _rebuild(applier, tracker, info, oid, lsn)
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
            if leaves is not None:
                save_partitions(land, source, table, leaves)
            save_forms(land, source, table, forms)
            applier.flush_all()
            land.commit()
        finally:
            repl.close()
    log.info("resynced %s.%s at %s", source, table, lsn_to_str(lsn))
    return (f"Table {source}.{table} rebuilt from a snapshot at {lsn_to_str(lsn)}: {rows} rows, "
            f"{early + late} changes kept while paused landed; it flows again.")


def _rebuild(applier: Applier, tracker: RelationTracker, info: TableInfo, oid: int,
             lsn: int) -> None:
    """Bring the mirror to the source's current shape and key, emptied; widen the changelog to
    match (creating both if the table never had them); unpause the table from ``lsn`` on."""
    conn = applier.conn
    hold_off_grants(conn)  # before the changelog is altered (ingestion.grants_lock)
    # before the mirror is emptied and the changelog altered: a prune batch finishes first
    lock_for_resync(conn, info.source, info.name)
    cols = tracker.numbered(oid, tracker.columns([(n, t, m) for n, t, m, _ in table_columns(
        tracker.source_conn, oid, publication_name(applier.source))]))
    key = key_columns(tracker.source_conn, oid)
    names = {c.name for c in cols}
    retired = [c for c in info.retired if c.name not in names]
    create_landing_tables(conn, replace(info, columns=cols, key=key, retired=retired))
    # the letter index of another key (type) would fail on the new key's letters
    stale = stale_letter_index(conn, info, replace(info, columns=cols, key=key))
    # Emptying and altering them takes ACCESS EXCLUSIVE: had without queueing their readers
    # while a reader holds them, then kept until the resync commits.
    applier.ddl_locks.run(conn, info.qualified, [info.mirror, info.changelog]
                          + ([DEAD_LETTERS] if stale else []), "resync it",
                          lambda: None if stale is None else drop_letter_index(conn, stale))
    have = _column_types(conn, info.changelog)
    _reshape_mirror(conn, info, cols + retired, key)
    info.columns, info.key, info.source_oid, info.retired = cols, key, oid, retired
    info.refresh()
    info.paused_reason, info.paused_lsn, info.auto_resync = None, None, False
    info.snapshot_lsn = lsn
    info.version += 1
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
    tracker.resync_wanted.discard(info.name)


def _column_types(conn: psycopg.Connection, table: sql.Identifier) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid ="
        " %s::regclass and attnum > 0 and not attisdropped order by attnum",
        (table.as_string(conn),))}


def _reshape_mirror(conn: psycopg.Connection, info: TableInfo, cols: list[ColumnInfo],
                    key: list[str]) -> None:
    """Empty the mirror and alter it in place to the source's columns (in order) and key.

    In place rather than dropped and re-created, so that what is built on the mirror survives:
    dbt staging views, live-view triggers (TRUNCATE makes them rebuild), grants. A change that
    a dependent object forbids (dropping or retyping a column a view reads) stops the resync
    with an error naming those objects; the transaction rolls back and the kept changes stay.

    Raises:
        ResyncBlockedError: a dependent object blocks a column change.
    """
    have = _column_types(conn, info.mirror)
    wanted = {c.name: c.type_sql for c in cols}
    changing: list[str] = []  # columns dropped or retyped, by their names before the resync
    conn.execute(sql.SQL("truncate {}").format(info.mirror))
    try:
        with conn.transaction():
            # A column gone and a column new at the same position is a rename (as the relation
            # tracker reads it): renaming keeps the column order and dependent views follow it.
            renamed: dict[str, str] = {}
            for old, new in zip(list(have), list(wanted), strict=False):
                if old != new and old not in wanted and new not in have:
                    conn.execute(sql.SQL("alter table {} rename column {} to {}").format(
                        info.mirror, sql.Identifier(old), sql.Identifier(new)))
                    have = {new if k == old else k: v for k, v in have.items()}
                    renamed[new] = old
            for name in have:
                if name not in wanted:
                    changing.append(name)
                    conn.execute(sql.SQL("alter table {} drop column {}").format(
                        info.mirror, sql.Identifier(name)))
            for name, type_sql in wanted.items():
                if name not in have:
                    conn.execute(sql.SQL("alter table {} add column {} {}").format(
                        info.mirror, sql.Identifier(name), sql.SQL(type_sql)))
                elif have[name] != type_sql:
                    changing.append(renamed.get(name, name))
                    # The table is empty: no value needs converting.
                    retype = sql.SQL("alter table {} alter column {} type {} using null")
                    conn.execute(retype.format(info.mirror, sql.Identifier(name),
                                               sql.SQL(type_sql)))
            if key != info.key:
                set_mirror_key(conn, info.mirror, key)
    except (psycopg.errors.DependentObjectsStillExist, psycopg.errors.FeatureNotSupported) as exc:
        detail = (exc.diag.message_detail or exc.diag.message_primary or str(exc)).strip()
        drops = drop_statements(conn, info.mirror, changing)
        todo = (drop_advice(drops) + "For a dbt model, change it if it needs to and run `dbt "
                "build` after the resync to re-create it; then run" if drops else
                "Update or drop those objects (for a dbt model, change it and run `dbt build` "
                "after the resync), then run")
        raise ResyncBlockedError(
            f"Cannot resync {info.source}.{info.name}: the mirror must change shape to match the "
            f"source, but other objects depend on it ({detail}). {todo} "
            f"{resync_hint(info.source, info.name)} again. Nothing was lost: the kept changes "
            f"stay in tidemark.paused_changes."
        ) from None


def _changelog_only(conn: psycopg.Connection, info: TableInfo, source: str, lsn: int | None
                    ) -> int:
    """Kept changes committed before the snapshot (all of them when ``lsn`` is None): into the
    changelog only."""
    cols = sql.SQL(", ").join(map(sql.Identifier, info.column_names))
    # Fields are named, not expanded with .*: the mirror's column order may differ from the
    # source's after a resync reshaped it in place.
    fields = sql.SQL(", ").join(sql.Identifier("r", c) for c in info.column_names)
    cur = conn.execute(sql.SQL(
        "insert into {} ({}, _op, _lsn, _commit_lsn, _seq, _commit_at, _txid)"
        " select {}, p.op, p.lsn, p.commit_lsn, p.seq, p.commit_at, p.txid"
        " from tidemark.paused_changes p,"
        " jsonb_populate_record(null::{}, coalesce(p.row_data, p.old_data)) r"
        " where p.source = %s and p.table_name = %s and p.commit_lsn < %s::pg_lsn"
        " order by p.commit_lsn, p.seq on conflict do nothing"
    ).format(info.changelog, cols, fields, info.mirror),
        (source, info.name, _END if lsn is None else lsn_to_str(lsn)))
    return cur.rowcount


def _replay_late(applier: Applier, info: TableInfo, source: str, lsn: int) -> int:
    """Kept changes from the snapshot on: through the applier (changelog and mirror)."""
    rows = applier.conn.execute(
        "select commit_lsn::text, seq, lsn::text, op, commit_at, txid, row_data, old_data"
        " from tidemark.paused_changes where source = %s and table_name = %s and"
        " commit_lsn >= %s::pg_lsn order by paused_changes.commit_lsn, seq",
        (source, info.name, lsn_to_str(lsn))).fetchall()
    names = info.column_names

    def values(data: dict | None) -> list | None:
        # A column missing from the kept row was sent as unchanged TOAST: resolved again.
        if data is None:
            return None
        return [UNCHANGED if c not in data else None if data[c] is None else
                str(data[c]).encode() for c in names]

    for commit_lsn, seq, change_lsn, op, commit_at, txid, new, old in rows:
        applier.start_source_txn(str_to_lsn(commit_lsn), commit_at, txid)
        if op == "t":
            applier.truncate([info], str_to_lsn(change_lsn), seq)
            continue
        applier.add(info, op, values(new), values(old), str_to_lsn(change_lsn), seq,
                    "O" if old is not None else None)
    return len(rows)
