"""Snapshots: the slot's exported snapshot, copied into landing at COPY speed.

``CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')`` on the replication connection returns the
slot's consistent point and a snapshot name; worker connections import it
(``SET TRANSACTION SNAPSHOT``) while the replication connection stays idle, and stream each
published table with ``COPY ... TO STDOUT`` straight into landing's ``COPY ... FROM STDIN``
(:mod:`ingestion.copypipe`: no row is parsed in Python). Streaming then starts at the
consistent point: every transaction committed before it is in the snapshot, every later one
comes from the slot, so there is no gap and no duplicate.

Tables new to landing load in parallel into staging tables (:mod:`ingestion.snapcopy`) that
the final landing transaction swaps in together with the checkpoint
(:mod:`ingestion.snapswap`); tables landing has already are reloaded in place inside that
transaction. Either way the snapshot becomes visible all at once, or not at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg2 import sql as sql2

from ingestion.catalog import published_tables
from ingestion.landing_indexes import create_landing
from ingestion.lock_room import tables_per_transaction
from ingestion.lsn import lsn_to_str, str_to_lsn
from ingestion.names import landing_table_name
from ingestion.progress import ProgressCallback, ProgressTracker
from ingestion.slotwait import reporting_slot_wait
from ingestion.snapcopy import (
    Job,
    copy_in_place,
    stage_tables,
    wants_binary,
)
from ingestion.snapswap import (
    clear_table,
    drop_staging,
    land_side_tables,
    move_in,
    reset_staging,
)
from ingestion.snapworkers import (
    event_column,
    hold_against_rewrites,
    open_snapshot,
    snapshot_workers,
    start_staged,
)
from ingestion.staging import staging_for, staging_schema
from ingestion.standby import nudging, primary_to_nudge
from ingestion.state import add_duplicates
from ingestion.tables import TableInfo
from ingestion.versions import SourceCapabilities
from ingestion.watermarks import advance as advance_watermark

log = logging.getLogger("tidemark.ingestion")

def create_slot_exporting(repl_cursor: Any, slot: str, temporary: bool = False, *,
                          watch_dsn: str | None = None, source: str = "",
                          setup_dsn: str | None = None) -> tuple[int, str]:
    """Create a pgoutput slot on a psycopg2 replication cursor, exporting its snapshot.

    On a standby, its primary (``setup_dsn``) is asked for running-transactions records while
    the slot is created (:func:`ingestion.standby.nudging`): the creation waits for one.

    Args:
        repl_cursor: a cursor of a ``LogicalReplicationConnection``.
        slot: the slot's name.
        temporary: a temporary slot (dropped with the connection).
        watch_dsn: a source URL from which, if the creation waits on open transactions, the
            log says which ones (:mod:`ingestion.slotwait`); None says nothing.
        source: the source's name, for that message.
        setup_dsn: the admin URL (a standby's primary), or None.

    Returns:
        (consistent point LSN, exported snapshot name).
    """
    export = SourceCapabilities(repl_cursor.connection.server_version).export_snapshot
    command = sql2.SQL("CREATE_REPLICATION_SLOT {} {} LOGICAL pgoutput {}").format(
        sql2.Identifier(slot), sql2.SQL("TEMPORARY" if temporary else ""), sql2.SQL(export))
    with nudging(primary_to_nudge(repl_cursor.connection, setup_dsn)), \
            reporting_slot_wait(watch_dsn, source, slot):
        repl_cursor.execute(command)
        row = repl_cursor.fetchone()
    return str_to_lsn(row[1]), row[2]


@dataclass
class SnapshotResult:
    """What a snapshot did.

    Attributes:
        rows: rows read from the source.
        tables: tables copied.
        dead: rows that broke their contract.
        duplicates: duplicate events dropped.
        seconds: wall time of the copy (after :meth:`finish`: as ``ingest status`` counts).
        rows_per_s: (after :meth:`finish`) the rate ``ingest status`` shows.
        jobs: the per-table jobs.
        progress: reports the snapshot's progress; :meth:`finish` after the landing commit.
    """

    rows: int = 0
    tables: int = 0
    dead: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    rows_per_s: float | None = None
    jobs: list[Job] = field(default_factory=list)
    progress: ProgressTracker | None = None

    def finish(self, committed: bool) -> None:
        """Mark the progress rows done (the landing transaction committed) or failed; from
        then on :attr:`seconds` and :attr:`rows_per_s` are what ``tidemark ingest status``
        shows (the first progress row to the landing commit)."""
        if self.progress is not None:
            self.progress.close(done=committed)
            shown = self.progress.shown
            if shown is not None:
                self.seconds, self.rows_per_s = shown["elapsed_s"], shown["rows_per_s"]
            self.progress = None


@dataclass
class SnapshotTask:
    """One snapshot to take.

    Attributes:
        source: source name.
        source_dsn: source URL with SELECT on the tables.
        landing_dsn: landing URL.
        snapshot_name: the exported snapshot.
        lsn: its consistent point.
        final: the landing connection whose open transaction makes the snapshot visible (it
            registers the tables; the caller commits it with the checkpoint).
        catalog: an autocommit source connection for catalog look-ups.
        register: registers a table in landing (``RelationTracker.from_catalog``; the last
            argument False: without its landing tables).
        contract_for: a table's contract, or None.
        contracts: the contract set, or None.
        known: landing tables that existed before (reloaded in place).
        replace_all: True for a full snapshot of the source (progress rows replaced).
        on_progress: progress callback.
        workers: tables copied at once.
        prefetch: reads the source catalog of the tables to register at once
            (``RelationTracker.prefetch``), or None.
    """

    source: str
    source_dsn: str
    landing_dsn: str
    snapshot_name: str
    lsn: int
    final: psycopg.Connection
    catalog: psycopg.Connection
    register: Callable[[int, str, str, int, bool], TableInfo]
    contract_for: Callable[[TableInfo], Any]
    contracts: Any = None
    known: set[str] = field(default_factory=set)
    replace_all: bool = True
    on_progress: ProgressCallback | None = None
    workers: int = field(default_factory=snapshot_workers)
    prefetch: Callable[[list[int]], None] | None = None


_ESTIMATES = """
select c.oid::int, n.nspname, c.relname, c.relkind = 'p',
    case when c.relkind <> 'p' then c.reltuples::bigint else (
    select sum(greatest(l.reltuples, 0))::bigint from pg_partition_tree(c.oid) t
      join pg_class l on l.oid = t.relid
     where t.isleaf having bool_or(l.reltuples > 0)) end,
    case when c.relkind <> 'p' then pg_relation_size(c.oid) else coalesce((
        select sum(pg_relation_size(t.relid)) from pg_partition_tree(c.oid) t
         where t.isleaf), 0) end / current_setting('block_size')::int
  from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = any(%s)"""
"""Per table: OID, schema, name, partitioned or not, the rows the source's statistics expect,
and its pages now. A partitioned table's statistics (PostgreSQL 13+ copies the root) are the
sum of its leaf partitions' (the root has none: -1, or 0 before 14), unknown while no leaf was
ever vacuumed or analyzed."""


def _estimates(conn: psycopg.Connection, oids: list[int]) -> dict[int, int | None]:
    """Table OID -> rows expected (:data:`_ESTIMATES`), None when unknown.

    A table with pages whose statistics say nothing (never analyzed: reltuples -1, or 0 before
    PostgreSQL 14; a database just restored from a dump is all such tables until autovacuum
    reaches them) is estimated by the source's planner from its current size, as a query on it
    would be: without it the snapshot has no ETA, and its largest table may be copied last.
    """
    out: dict[int, int | None] = {}
    for oid, schema, name, partitioned, rows, pages in conn.execute(_ESTIMATES, (oids,)
                                                                     ).fetchall():
        if not pages:
            out[oid] = 0
        elif rows is not None and rows > 0:
            out[oid] = rows
        else:
            planned = _planner_rows(conn, schema, name, partitioned)
            # The planner takes a never-vacuumed table of fewer than 10 pages for 10.
            out[oid] = None if planned is None else \
                planned if partitioned or pages >= 10 else planned * int(pages) // 10
    return out


def _planner_rows(conn: psycopg.Connection, schema: str, name: str, partitioned: bool
                  ) -> int | None:
    """The source planner's row estimate of a scan of ``schema.name`` (its partitions too when
    partitioned), None if it cannot plan one."""
    query = sql.SQL("explain (format json) select from {}{}").format(
        sql.SQL("" if partitioned else "only "), sql.Identifier(schema, name))
    try:
        with conn.transaction():  # a refusal must not end the caller's transaction
            plan = conn.execute(query).fetchone()[0]
    except psycopg.Error as exc:
        log.info("snapshot: no row estimate for %s.%s: %s", schema, name, exc)
        return None
    return int(plan[0]["Plan"]["Plan Rows"])


def take_snapshot(task: SnapshotTask, tables: list[tuple[int, str, str]]) -> SnapshotResult:
    """Copy ``tables`` (oid, schema, name) as of the exported snapshot into landing.

    Everything lands in ``task.final``'s open transaction (staged tables are swapped in there);
    the caller commits it with the checkpoint, then calls ``result.finish(committed)``.

    Raises:
        psycopg.Error: a copy failed (the final transaction must be rolled back).
    """
    started = time.monotonic()
    result = SnapshotResult()
    estimates = _estimates(task.catalog, [t[0] for t in tables])
    same_major = task.catalog.info.server_version // 10000 == \
        task.final.info.server_version // 10000
    staged: list[Job] = []
    in_place: list[Job] = []
    if task.prefetch is not None:
        task.prefetch([oid for oid, namespace, table in tables
                       if landing_table_name(namespace, table) not in task.known])
    for oid, namespace, table in tables:
        new = landing_table_name(namespace, table) not in task.known
        info = task.register(oid, namespace, table, task.lsn, False)  # tables: below
        if info.paused_reason is not None:
            log.warning("snapshot skips paused table %s: %s", info.qualified, info.paused_reason)
            continue
        job = Job(info, task.contract_for(info), task.contracts, estimates.get(oid),
                  wants_binary(info, same_major))
        (staged if new else in_place).append(job)
    if task.prefetch is not None:
        task.prefetch([])
    jobs = sorted(staged, key=lambda j: -(j.estimate or 0)) + in_place
    result.jobs = jobs
    tracker = ProgressTracker(task.landing_dsn, task.source, task.lsn,
                              [(j.info.name, j.estimate) for j in jobs], task.on_progress,
                              replace_all=task.replace_all)
    ok = False
    try:
        if staged and not _prepare_staging(task, staged):
            for job in staged:
                create_landing(task.final, job.info, job.contract)
            in_place, staged = staged + in_place, []
        commit_at = datetime.now(UTC)
        with ThreadPoolExecutor(max_workers=max(1, task.workers),
                                thread_name_prefix="tidemark-snapshot") as pool:
            futures = start_staged(pool, task, staged, tracker)
            if in_place:
                src = open_snapshot(task.source_dsn, task.snapshot_name)
                try:
                    for job in in_place:
                        tracker.start(job.info.name)
                        hold_against_rewrites(src, [job.info.source_oid])
                        copy_in_place(src, task.final, job, task.lsn, commit_at,
                                      lambda n, t=job.info.name: tracker.add(t, n),
                                      first=job.info.name not in task.known)
                        tracker.finish(job.info.name, job.result.rows)
                finally:
                    src.close()
            for future in futures:
                future.result()
        at = lsn_to_str(task.lsn)
        move_in(task.final, staged)
        side = {r[0] for r in task.final.execute(
            "select relname from pg_class where relnamespace = to_regnamespace(%s)",
            (staging_schema(task.source),))} if staged else set()
        for job in staged:
            stg = staging_for(job.info)
            if f"d_{stg.oid}" in side:
                land_side_tables(task.final, job.info, stg, at, commit_at)
            _advance_watermark(task, job, stg.ident("w"))
        if staged:
            drop_staging(task.final, task.source)
        for job in in_place:
            if job.info.name not in task.known:  # its changelog holds this snapshot's rows only
                _advance_watermark(task, job, job.info.changelog)
        # Done in the same transaction as the data: the LSN below which the stream skips a
        # table's changes (its snapshot holds them) is durable exactly when the rows are. The
        # clock, not now(): this transaction began before the progress rows' started_at.
        task.final.execute(
            "update tidemark.snapshot_progress set state = 'done', finished_at = clock_timestamp()"
            " where source = %s and table_name = any(%s)",
            (task.source, [j.info.name for j in jobs]))
        for job in jobs:
            if job.result.duplicates:
                add_duplicates(task.final, task.source, job.info.name, job.result.duplicates)
            result.rows += job.result.rows
            result.dead += job.result.dead
            result.duplicates += job.result.duplicates
        result.tables = len(jobs)
        result.seconds = round(time.monotonic() - started, 3)
        result.progress = tracker
        ok = True
        return result
    finally:
        if not ok:
            tracker.close(done=False)


def _advance_watermark(task: SnapshotTask, job: Job, rows: sql.Identifier) -> None:
    """Advance a new table's watermark by its snapshot rows, as a streamed batch of them would
    (:func:`ingestion.watermarks.advance`), in the snapshot's landing transaction. ``rows`` has
    them (``_op = 'r'``, none of them late): the changelog of a table new to landing, or the
    one-row aggregate of a staged one (:func:`ingestion.snapworkers.stage_watermark`). No
    change time is recorded: the table stays idle since its snapshot.

    A first ``catch_up`` returns when the snapshot commits, before any streamed transaction:
    without this (and the checkpoint's source progress), no watermark would close a seeded day
    until ingestion ran."""
    column = event_column(job)
    if column is not None:
        with task.final.cursor() as cur:
            advance_watermark(cur, task.source, job.info.name, rows, column,
                              job.contract.allowed_lateness, streamed=False)


def _prepare_staging(task: SnapshotTask, jobs: list[Job]) -> bool:
    """Create the staging schemas and tables, a few per transaction (nothing in landing sees
    them); False when the landing role may not."""
    schema = staging_schema(task.source)
    try:
        with psycopg.connect(task.landing_dsn) as conn:
            conn.autocommit = True
            if task.replace_all:
                reset_staging(conn, task.source)
            conn.autocommit = False
            batch = tables_per_transaction(conn)  # a few at a time: room in the lock table
            for n, job in enumerate(jobs, 1):
                stg = staging_for(job.info)
                if not task.replace_all:
                    clear_table(conn, stg)
                job.rebuild = stage_tables(conn, job, stg, task.lsn, datetime.now(UTC))
                if n % batch == 0:
                    conn.commit()
            conn.commit()
        return True
    except psycopg.errors.InsufficientPrivilege as exc:
        log.warning("snapshot: cannot create staging schema %s (%s); copying table by table in "
                    "one transaction instead (slower)", schema, exc.diag.message_primary)
        return False


def snapshot_tables(src: psycopg.Connection, applier: Any, tracker: Any, publication: str,
                    lsn: int, only: set[str] | None = None) -> int:
    """Reload published tables (or those named in ``only``) in place as of a snapshot.

    Everything happens in the applier's open transaction, which the caller commits (used by
    ``resync``).

    Returns:
        Rows loaded.
    """
    applier.begin()
    total = 0
    same_major = src.info.server_version // 10000 == applier.conn.info.server_version // 10000
    commit_at = datetime.now(UTC)
    for oid, namespace, table in published_tables(src, publication):
        if only is not None and landing_table_name(namespace, table) not in only:
            continue
        info = tracker.from_catalog(oid, namespace, table, lsn)
        if info.paused_reason is not None:
            log.warning("snapshot skips paused table %s: %s", info.qualified, info.paused_reason)
            continue
        job = Job(info, applier.contract_for(info), applier.contracts, None,
                  wants_binary(info, same_major))
        hold_against_rewrites(src, [oid])
        copy_in_place(src, applier.conn, job, lsn, commit_at)
        if job.result.duplicates:
            add_duplicates(applier.conn, applier.source, info.name, job.result.duplicates)
        log.info("snapshot: %s rows of %s", job.result.rows, info.qualified)
        total += job.result.rows
    return total
