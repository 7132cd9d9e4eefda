"""The snapshots a streaming session takes: the initial one, and of tables that join later.

The initial snapshot copies every published table as of the slot's exported snapshot and commits
it with the first checkpoint. A table that joins the publication while the session streams is
copied as of a temporary slot's snapshot; the stream then skips the table's changes older than
that snapshot (its *floor*). Both run between landing transactions, on the session's
connections (:class:`ingestion.session.Session`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg

from ingestion.catalog import drop_slot, published_tables, slot_info
from ingestion.failures import check_capacity
from ingestion.lock_room import locks_error
from ingestion.lsn import lsn_to_str, str_to_lsn
from ingestion.names import landing_table_name
from ingestion.partitions import (
    Leaves,
    load_partitions,
    partitions_moved_rows,
    save_partitions,
    source_partitions,
    streamed_leaves,
)
from ingestion.publication import sync_publication
from ingestion.quiet_retypes import follow_retypes
from ingestion.session_settings import replication_connection
from ingestion.snapshot import SnapshotTask, create_slot_exporting, take_snapshot
from ingestion.standby import await_replay
from ingestion.type_forms import Forms, forms_changed, load_forms, save_forms, source_forms

if TYPE_CHECKING:
    from ingestion.session import Session
    from ingestion.tables import TableInfo

log = logging.getLogger("tidemark.ingestion")


def initial_snapshot(session: Session) -> None:
    """Publish the selection, create the slot and copy every published table as of its snapshot.

    A slot left from an earlier attempt without a landed snapshot is dropped and recreated.
    """
    cfg = session.cfg
    for warning in check_capacity(session.source_conn, cfg.source, session.slot,
                                  held_senders=1):  # before anything is created
        log.warning("source %s: %s", cfg.source, warning)
    report = sync_publication(cfg.setup_dsn or cfg.source_dsn, session.publication,
                              cfg.selection)
    session._log_report(report)
    await_replay(session.source_conn, cfg.setup_dsn, cfg.source)  # a standby: its catalog too
    if slot_info(session.source_conn, session.slot) is not None:
        log.warning("source %s: slot %s exists but landing has no snapshot; recreating it",
                    cfg.source, session.slot)
        drop_slot(cfg.source_dsn, session.slot)  # where the stream is (a standby: its own)
    # Every transaction committed on the source before this instant is in the slot's snapshot:
    # the checkpoint's source progress (last_commit_at), which idle tables' watermarks follow.
    as_of = session.source_conn.execute("select clock_timestamp()").fetchone()[0]
    tables = published_tables(session.source_conn, session.publication)
    partitions, forms = _partitions_before(session, tables), _forms_before(session, tables)
    lsn, snapshot = create_slot_exporting(session.cur, session.slot, watch_dsn=cfg.source_dsn,
                                          source=cfg.source, setup_dsn=cfg.setup_dsn)
    log.info("source %s: slot %s created at %s; snapshot %s", cfg.source, session.slot,
             lsn_to_str(lsn), snapshot)
    rows = snapshot_tables(session, snapshot, lsn, tables, checkpoint=lsn, as_of=as_of,
                           partitions=partitions, forms=forms)
    session.stats.snapshot_rows = rows
    session.ckpt = lsn
    session.floors = {}


def _partitions_before(session: Session, tables: list[tuple[int, str, str]]
                       ) -> dict[str, Leaves]:
    """The partitions of the partitioned ``tables``, read before their snapshot, by landing
    name: partition DDL after this read is seen by the next check (:func:`check_partitions`)."""
    now = source_partitions(session.source_conn, [t[0] for t in tables])
    session.source_conn.rollback()
    return {landing_table_name(schema, table): now[oid] for oid, schema, table in tables
            if oid in now}


def _forms_before(session: Session, tables: list[tuple[int, str, str]]) -> dict[str, Forms]:
    """The forms of the user types the ``tables`` reach, read before their snapshot, by landing
    name: a change after this read is seen by the next check (:func:`check_type_forms`)."""
    now = source_forms(session.source_conn, [t[0] for t in tables])
    session.source_conn.rollback()
    return {landing_table_name(schema, table): now[oid] for oid, schema, table in tables}


def snapshot_tables(session: Session, snapshot: str, lsn: int,
                    tables: list[tuple[int, str, str]], checkpoint: int | None,
                    as_of: datetime | None = None,
                    partitions: dict[str, Leaves] | None = None,
                    forms: dict[str, Forms] | None = None) -> int:
    """Copy ``tables`` as of ``snapshot`` and commit them with the checkpoint.

    Args:
        session: the streaming session (between landing transactions).
        snapshot: the exported snapshot's name.
        lsn: its consistent point.
        tables: (oid, schema, table) to copy.
        checkpoint: the initial snapshot's LSN; None for tables added while streaming
            (the checkpoint stays where the stream is).
        as_of: (initial snapshot) a source time before the slot was created: the
            checkpoint's ``last_commit_at``.
        partitions: the partitions of the partitioned tables, read before the snapshot
            (:func:`_partitions_before`), saved with it.
        forms: the forms of the user types each table reaches, read before the snapshot
            (:func:`_forms_before`), saved with it.

    Returns:
        Rows copied.
    """
    cfg, applier = session.cfg, session.applier
    applier.begin()
    task = SnapshotTask(
        cfg.source, cfg.source_dsn, cfg.landing_dsn, snapshot, lsn, final=session.landing,
        catalog=session.source_conn, register=session.tracker.from_catalog,
        contract_for=applier.contract_for, contracts=cfg.contracts,
        known=set(applier.tables), replace_all=checkpoint is not None,
        on_progress=cfg.on_progress, prefetch=session.tracker.prefetch)
    try:
        result = take_snapshot(task, tables)
    except psycopg.errors.OutOfMemory as exc:
        raise locks_error(cfg.landing_dsn, cfg.source, len(tables), exc) from exc
    committed = False
    try:
        for name, leaves in (partitions or {}).items():
            save_partitions(applier.conn, cfg.source, name, leaves)
        for name, form in (forms or {}).items():
            save_forms(applier.conn, cfg.source, name, form)
        if checkpoint is not None:
            applier.rows_in_txn += result.rows  # counted in rows_applied
            applier.commit(checkpoint, as_of, snapshot_lsn=checkpoint)
        else:
            applier.commit(session.ckpt, session.last_commit_at)
        committed = True
    finally:
        result.finish(committed)
    log.info("source %s: snapshot of %d table%s, %s rows in %.1f s (%.0f rows/s); %d dead "
             "letters, %d duplicate events dropped", cfg.source, result.tables,
             "" if result.tables == 1 else "s", f"{result.rows:,}",
             result.seconds, result.rows_per_s if result.rows_per_s is not None else
             result.rows / max(result.seconds, 1e-6), result.dead,
             result.duplicates)
    return result.rows


def load_floors(landing: psycopg.Connection, source: str, ckpt: int) -> dict[str, int]:
    """Tables snapshotted after the checkpoint ``ckpt``: the stream skips their older changes."""
    rows = landing.execute(
        "select table_name, snapshot_lsn::text from tidemark.snapshot_progress where"
        " source = %s and state = 'done' and snapshot_lsn > %s::pg_lsn",
        (source, lsn_to_str(ckpt))).fetchall()
    landing.rollback()
    return {name: str_to_lsn(lsn) for name, lsn in rows}


def snapshot_new_tables(session: Session) -> int:
    """Bring the publication up to date and snapshot tables that joined it.

    Runs between transactions (nothing pending). New publishable tables of the selected
    schemas are added to the publication, then copied as of a temporary slot's snapshot;
    the stream skips their changes older than that snapshot.

    Returns:
        Rows copied from new tables.
    """
    cfg = session.cfg
    report = sync_publication(cfg.setup_dsn or cfg.source_dsn, session.publication,
                              cfg.selection, must_exist=False)
    session._log_report(report)
    if report.added:
        await_replay(session.source_conn, cfg.setup_dsn, cfg.source)
    tables = session.applier.tables
    published = [(t, tables.get(landing_table_name(t[1], t[2])))
                 for t in published_tables(session.source_conn, session.publication)]
    known = [(t, info) for t, info in published if info is not None and info.source_oid
             and info.paused_reason is None]
    recreated = [(t, info) for t, info in known if info.source_oid != t[0]]
    # Back in the publication (it had lost its key, say): its changes in between never came.
    rejoined = [info for t, info in known if info.source_oid == t[0]
                and f"{t[1]}.{t[2]}" in report.added]
    # The publication sent less than every change of these (ingestion.publication_options);
    # paused ones too (a column list looked like a dropped column to a table with a contract).
    narrowed = [(info, f"publication {session.publication} had {report.restored}" if
                 report.restored else f"publication {session.publication} had "
                 f"{report.narrowed[f'{t[1]}.{t[2]}']} on it") for t, info in published
                if info is not None and info.source_oid == t[0] and info not in rejoined
                and (report.restored or f"{t[1]}.{t[2]}" in report.narrowed)]
    if recreated or rejoined or narrowed:
        session.applier.begin()
        for (oid, _, _), info in recreated:
            session.tracker.recreated(info, oid, session.ckpt)
        for info, had in narrowed:
            session.tracker.recopy(info, session.ckpt, f"{had} (set on the source by someone "
                                   f"else), so some of its changes were not sent; Tidemark "
                                   f"put the publication back", "publish_restored")
        for info in rejoined:
            session.tracker.recopy(info, session.ckpt, "it is back in the publication after "
                                   "being out of it (it could not be published without a key "
                                   "or replica identity, or the publication was dropped or "
                                   "changed on the source), so its changes in between were "
                                   "not streamed", "rejoin_publication")
        session.applier.commit(session.ckpt, session.last_commit_at)
    check_partitions(session, [(t[0], info) for t, info in known if info.source_oid == t[0]])
    check_type_forms(session, [(t[0], info) for t, info in known if info.source_oid == t[0]])
    follow_retypes(session, [(t[0], info) for t, info in known if info.source_oid == t[0]])
    new = [t for t, info in published if info is None]
    if not new:
        return 0
    log.info("source %s: new tables %s; copying them", cfg.source,
             ", ".join(f"{s}.{t}" for _, s, t in new))
    partitions, forms = _partitions_before(session, new), _forms_before(session, new)
    repl = replication_connection(cfg.source_dsn)
    try:
        lsn, snapshot = create_slot_exporting(repl.cursor(), f"{session.slot}_add",
                                              temporary=True, watch_dsn=cfg.source_dsn,
                                              source=cfg.source, setup_dsn=cfg.setup_dsn)
        rows = snapshot_tables(session, snapshot, lsn, new, checkpoint=None,
                               partitions=partitions, forms=forms)
    finally:
        repl.close()
    for _, schema, table in new:
        session.floors[landing_table_name(schema, table)] = lsn
    return rows


def check_partitions(session: Session, known: list[tuple[int, TableInfo]]) -> None:
    """Copy again each partitioned table whose partitions moved rows without a change in the
    stream (:func:`ingestion.partitions.partitions_moved_rows`), between transactions.

    Args:
        session: the streaming session.
        known: (source OID, landing table) of the published tables landing has, not paused.
    """
    known = [(oid, info) for oid, info in known if info.paused_reason is None]
    now = source_partitions(session.source_conn, [oid for oid, _ in known])
    if not now:
        session.source_conn.rollback()
        return
    stored = load_partitions(session.landing, session.cfg.source)
    if not session.applier.in_txn:  # else the read is part of the applier's transaction
        session.landing.rollback()
    streamed = {oid: streamed_leaves(session.source_conn, stored[info.name], now[oid])
                for oid, info in known if oid in now and info.name in stored}
    session.source_conn.rollback()
    changed = [(oid, info) for oid, info in known
               if oid in now and stored.get(info.name) != now[oid]]
    if not changed:
        return
    applier = session.applier
    applier.begin()
    for oid, info in changed:
        # first seen (a landing from before round 37): from now on
        why = None if info.name not in stored else partitions_moved_rows(
            stored[info.name], now[oid], streamed.get(oid, set()))
        save_partitions(applier.conn, session.cfg.source, info.name, now[oid])
        if why is not None:
            session.tracker.recopy(info, session.ckpt, f"{why} ({info.source_schema}."
                                   f"{info.source_table})", "partitions_moved_rows")
    applier.commit(session.ckpt, session.last_commit_at)


def check_type_forms(session: Session, known: list[tuple[int, TableInfo]]) -> None:
    """Copy again each table whose rows' text a catalog change rewrote without a change in the
    stream (:func:`ingestion.type_forms.forms_changed`: an enum value renamed, a composite's
    attributes added or dropped), between transactions.

    Args:
        session: the streaming session.
        known: (source OID, landing table) of the published tables landing has.
    """
    known = [(oid, info) for oid, info in known if info.paused_reason is None]
    now = source_forms(session.source_conn, [oid for oid, _ in known])
    stored = load_forms(session.landing, session.cfg.source)
    if not session.applier.in_txn:  # else the read is part of the applier's transaction
        session.landing.rollback()
    changed = [(oid, info) for oid, info in known if stored.get(info.name) != now[oid]]
    why = {info.name: forms_changed(session.source_conn, stored[info.name], now[oid])
           for oid, info in changed if info.name in stored}
    session.source_conn.rollback()
    if not changed:
        return
    applier = session.applier
    applier.begin()
    for oid, info in changed:  # first seen (a landing from before round 43): from now on
        save_forms(applier.conn, session.cfg.source, info.name, now[oid])
        if why.get(info.name) is not None:
            session.tracker.recopy(info, session.ckpt, f"{why[info.name]} ({info.source_schema}"
                                   f".{info.source_table})", "type_form_changed")
    applier.commit(session.ckpt, session.last_commit_at)
