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
import os
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
from ingestion.errors import SnapshotRewrittenError
from ingestion.lsn import lsn_to_str, str_to_lsn
from ingestion.names import landing_table_name
from ingestion.progress import ProgressCallback, ProgressTracker
from ingestion.session_settings import pin_later_settings, pinned_dsn
from ingestion.slotwait import reporting_slot_wait
from ingestion.snapcopy import (
    Job,
    Staging,
    build_indexes,
    copy_in_place,
    copy_staged,
    stage_tables,
    wants_binary,
)
from ingestion.snapswap import (
    clear_table,
    land_side_tables,
    reset_staging,
    staging_schema,
    swap_in,
)
from ingestion.state import add_duplicates
from ingestion.tables import TableInfo
from ingestion.versions import SourceCapabilities
from ingestion.watermarks import advance as advance_watermark

log = logging.getLogger("tidemark.ingestion")

INDEX_ROW_BYTES = 64
INDEX_MEMORY_CAP_MB = 1024


def snapshot_workers() -> int:
    """Tables copied at once: ``TIDEMARK_SNAPSHOT_WORKERS``, else half the cores (2 to 4).

    Each table already keeps three backends busy (one COPY out, two COPY in); two tables at
    once still help on two cores, where one table's checks and index builds overlap the other's
    copy.
    """
    raw = os.environ.get("TIDEMARK_SNAPSHOT_WORKERS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(2, min(4, (os.cpu_count() or 2) // 2))


def index_build_workers() -> int | None:
    """Parallel workers of each snapshot index build: ``TIDEMARK_SNAPSHOT_INDEX_WORKERS``,
    else 0 on a machine with 4 cores or fewer, else the server's setting (None).

    A snapshot already builds a table's two indexes in two backends at once, next to the other
    tables' copies; on few cores parallel workers find no idle core and only add their
    overhead (each sorts a share, writes it to a temporary file, the leader merges them), where
    one backend sorts in memory. Measured at 2M rows on 2 cores: bench/RESULTS.md (k10).
    """
    raw = os.environ.get("TIDEMARK_SNAPSHOT_INDEX_WORKERS", "").strip()
    if raw.isdigit():
        return int(raw)
    return 0 if (os.cpu_count() or 2) <= 4 else None


def index_build_memory_mb(rows: int) -> int:
    """Sort memory (MB) that keeps one index build of a ``rows``-row table in memory, capped.

    A btree build sorts one entry per row: a 24-byte sort slot plus the index tuple (16 bytes
    for an ``int`` key, 24 for the changelog's ``(_commit_lsn, _seq)``), with the slot array's
    growth on top (``trace_sort``: 41 and 49 bytes a row at 1M rows, 52 and 54 at 18M).
    :data:`INDEX_ROW_BYTES` leaves room for wider keys. The cap,
    ``TIDEMARK_SNAPSHOT_INDEX_MEMORY_MB`` (default :data:`INDEX_MEMORY_CAP_MB`; 0 keeps the
    server's setting), bounds what one build may take: 1 GB sorts an 18M-row table's indexes
    in memory, and a table builds its two at once (2 GB at most, held for the builds only),
    next to the other tables' (``TIDEMARK_SNAPSHOT_WORKERS``), which are seldom as large.
    """
    raw = os.environ.get("TIDEMARK_SNAPSHOT_INDEX_MEMORY_MB", "").strip()
    cap = int(raw) if raw.isdigit() else INDEX_MEMORY_CAP_MB
    return min(cap, -(-rows * INDEX_ROW_BYTES // 2**20))


def index_build_settings(conn: psycopg.Connection, rows: int) -> dict[str, str]:
    """``SET LOCAL`` settings of a staged table's index builds (:func:`build_indexes`).

    ``max_parallel_maintenance_workers`` from :func:`index_build_workers`;
    ``maintenance_work_mem`` raised to :func:`index_build_memory_mb` where the server's is
    lower, never lowered. At the server default (64 MB) a build of more than ~1.2M rows sorts
    on disk: the 18M-row table's two builds wrote 344 and 482 MB of temporary files and took
    22-26 % more CPU than in memory (0.91 and 0.95 GB); bench/RESULTS.md, s36.
    """
    settings = {}
    workers = index_build_workers()
    if workers is not None:
        settings["max_parallel_maintenance_workers"] = str(workers)
    server_kb = int(conn.execute("select setting from pg_settings"
                                 " where name = 'maintenance_work_mem'").fetchone()[0])
    wanted = index_build_memory_mb(rows)
    if wanted * 1024 > server_kb:
        settings["maintenance_work_mem"] = f"{wanted}MB"
    return settings


def create_slot_exporting(repl_cursor: Any, slot: str, temporary: bool = False, *,
                          watch_dsn: str | None = None, source: str = "") -> tuple[int, str]:
    """Create a pgoutput slot on a psycopg2 replication cursor, exporting its snapshot.

    Args:
        repl_cursor: a cursor of a ``LogicalReplicationConnection``.
        slot: the slot's name.
        temporary: a temporary slot (dropped with the connection).
        watch_dsn: a source URL from which, if the creation waits on open transactions, the
            log says which ones (:mod:`ingestion.slotwait`); None says nothing.
        source: the source's name, for that message.

    Returns:
        (consistent point LSN, exported snapshot name).
    """
    export = SourceCapabilities(repl_cursor.connection.server_version).export_snapshot
    command = sql2.SQL("CREATE_REPLICATION_SLOT {} {} LOGICAL pgoutput {}").format(
        sql2.Identifier(slot), sql2.SQL("TEMPORARY" if temporary else ""), sql2.SQL(export))
    with reporting_slot_wait(watch_dsn, source, slot):
        repl_cursor.execute(command)
        row = repl_cursor.fetchone()
    return str_to_lsn(row[1]), row[2]


def open_snapshot(source_dsn: str, snapshot_name: str) -> psycopg.Connection:
    """A source connection whose transaction sees exactly the exported snapshot."""
    conn = pin_later_settings(psycopg.connect(pinned_dsn(source_dsn)))  # startup options, SETs
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot_name)))
    return conn


# The table's current schema and name, unquoted (pg_identify_object's ``name`` is quoted where
# it needs quotes: ``"MixedCase"``); NULL for a table dropped since the snapshot.
_REWRITTEN = """
select p.i[1], p.i[2], c.relfilenode <> pg_relation_filenode(c.oid) as rewritten
from pg_class c, pg_identify_object('pg_class'::regclass, c.oid, 0) t,
     lateral (select parse_ident(t.identity)) p(i)
where c.oid = any(%s)
"""


def hold_against_rewrites(conn: psycopg.Connection, oids: list[int]) -> None:
    """In a snapshot's transaction, lock ``oids`` (and their partitions) ACCESS SHARE until it
    ends, so no ``ALTER TABLE`` can rewrite them while they are copied, and check that none was
    rewritten since the snapshot was exported.

    A rewriting ``ALTER TABLE`` (or ``TRUNCATE``, ``VACUUM FULL``) gives the table a new file
    whose rows older snapshots do not see: copied from such a snapshot, the table would land
    empty. The snapshot's own ``pg_class`` row still names the old file, the catalog (read
    once the lock is had) the new one.

    Raises:
        SnapshotRewrittenError: a table was rewritten after the snapshot; take a new one.
    """
    # a table dropped since the snapshot has no name now: its copy says so itself
    names = [r for r in conn.execute(_REWRITTEN, (oids,)).fetchall() if r[1] is not None]
    if not names:
        return
    conn.execute(sql.SQL("lock table {} in access share mode").format(
        sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name, _ in names)))
    leaves = oids + ([r[0] for r in conn.execute(  # a plain table has no partition tree
        "select relid::oid::int from unnest(%s::oid[]) o, pg_partition_tree(o) where isleaf",
        (oids,))] if conn.info.server_version >= 120000 else [])
    rewritten = [f"{schema}.{name}" for schema, name, moved
                 in conn.execute(_REWRITTEN, (leaves,)).fetchall() if moved]
    if rewritten:
        raise SnapshotRewrittenError(
            f"{', '.join(rewritten)} rewritten on the source (ALTER TABLE, TRUNCATE or VACUUM "
            f"FULL) after the snapshot was taken: it looks empty to that snapshot")


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
        register: registers a table in landing (``RelationTracker.from_catalog``).
        contract_for: a table's contract, or None.
        contracts: the contract set, or None.
        known: landing tables that existed before (reloaded in place).
        replace_all: True for a full snapshot of the source (progress rows replaced).
        on_progress: progress callback.
        workers: tables copied at once.
    """

    source: str
    source_dsn: str
    landing_dsn: str
    snapshot_name: str
    lsn: int
    final: psycopg.Connection
    catalog: psycopg.Connection
    register: Callable[[int, str, str, int], TableInfo]
    contract_for: Callable[[TableInfo], Any]
    contracts: Any = None
    known: set[str] = field(default_factory=set)
    replace_all: bool = True
    on_progress: ProgressCallback | None = None
    workers: int = field(default_factory=snapshot_workers)


_ESTIMATES = """
select c.oid::int, case when c.relkind <> 'p' then c.reltuples::bigint else (
    select sum(greatest(l.reltuples, 0))::bigint from pg_partition_tree(c.oid) t
      join pg_class l on l.oid = t.relid
     where t.isleaf having bool_or(l.reltuples > 0)) end
  from pg_class c where c.oid = any(%s)"""
"""Rows the source's statistics expect of each table: a partitioned table's (PostgreSQL
13+ copies the root) is the sum of its leaf partitions' (the root has none: -1, or 0 before
14), unknown while no leaf was ever vacuumed or analyzed."""


def _estimates(conn: psycopg.Connection, oids: list[int]) -> dict[int, int | None]:
    """Table OID -> rows expected (:data:`_ESTIMATES`), None when unknown."""
    return {r[0]: (r[1] if r[1] is not None and r[1] >= 0 else None)
            for r in conn.execute(_ESTIMATES, (oids,))}


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
    for oid, namespace, table in tables:
        new = landing_table_name(namespace, table) not in task.known
        info = task.register(oid, namespace, table, task.lsn)
        if info.paused_reason is not None:
            log.warning("snapshot skips paused table %s: %s", info.qualified, info.paused_reason)
            continue
        job = Job(info, task.contract_for(info), task.contracts, estimates.get(oid),
                  wants_binary(info, same_major))
        (staged if new else in_place).append(job)
    jobs = sorted(staged, key=lambda j: -(j.estimate or 0)) + in_place
    result.jobs = jobs
    tracker = ProgressTracker(task.landing_dsn, task.source, task.lsn,
                              [(j.info.name, j.estimate) for j in jobs], task.on_progress,
                              replace_all=task.replace_all)
    ok = False
    try:
        if staged and not _prepare_staging(task, staged):
            in_place, staged = staged + in_place, []
        commit_at = datetime.now(UTC)
        with ThreadPoolExecutor(max_workers=max(1, task.workers),
                                thread_name_prefix="tidemark-snapshot") as pool:
            futures = [pool.submit(_run_staged, task, job, tracker) for job in staged]
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
        for job in staged:
            stg = Staging(staging_schema(task.source), job.info.source_oid)
            swap_in(task.final, job.info, stg)
            land_side_tables(task.final, job.info, stg, at, commit_at)
            _advance_watermark(task, job, stg.ident("w"))
        if staged:
            task.final.execute(sql.SQL("drop schema if exists {} cascade").format(
                sql.Identifier(staging_schema(task.source))))
        for job in in_place:
            if job.info.name not in task.known:  # its changelog holds this snapshot's rows only
                _advance_watermark(task, job, job.info.changelog)
        # Done in the same transaction as the data: the LSN below which the stream skips a
        # table's changes (its snapshot holds them) is durable exactly when the rows are.
        task.final.execute(
            "update tidemark.snapshot_progress set state = 'done', finished_at = now()"
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


def _event_column(job: Job) -> str | None:
    """The job's event-time column (its contract's, when the table has it), or None."""
    column = getattr(job.contract, "event_time", None)
    return column if column and column in job.info.column_names else None


def _advance_watermark(task: SnapshotTask, job: Job, rows: sql.Identifier) -> None:
    """Advance a new table's watermark by its snapshot rows, as a streamed batch of them would
    (:func:`ingestion.watermarks.advance`), in the snapshot's landing transaction. ``rows`` has
    them (``_op = 'r'``, none of them late): the changelog of a table new to landing, or the
    one-row aggregate of a staged one (:func:`_stage_watermark`). No change time is recorded:
    the table stays idle since its snapshot.

    A first ``catch_up`` returns when the snapshot commits, before any streamed transaction:
    without this (and the checkpoint's source progress), no watermark would close a seeded day
    until ingestion ran."""
    column = _event_column(job)
    if column is not None:
        with task.final.cursor() as cur:
            advance_watermark(cur, task.source, job.info.name, rows, column,
                              job.contract.allowed_lateness, streamed=False)


def _stage_watermark(conn: psycopg.Connection, job: Job, stg: Staging) -> None:
    """In the table's worker, after the checks and the dedup: the latest event and commit times
    of its snapshot rows, as one row ``w_<oid>`` that :func:`_advance_watermark` reads in the
    final transaction instead of the whole changelog (a scan less in the serial part)."""
    column = _event_column(job)
    if column is None:
        return
    col = sql.Identifier(column)
    conn.execute(sql.SQL(
        "create table {} as select max({col}) as {col}, max(_commit_at) as _commit_at,"
        " 'r'::text as _op from {} where {col} is not null").format(
            stg.ident("w"), stg.ident("c"), col=col))
    conn.commit()


def _prepare_staging(task: SnapshotTask, jobs: list[Job]) -> bool:
    """Create the staging schema and tables; False when the landing role may not."""
    schema = staging_schema(task.source)
    try:
        with psycopg.connect(task.landing_dsn) as conn:
            conn.autocommit = True
            if task.replace_all:
                reset_staging(conn, task.source)
            conn.autocommit = False
            for job in jobs:
                stg = Staging(schema, job.info.source_oid)
                if not task.replace_all:
                    clear_table(conn, stg)
                job.rebuild = stage_tables(conn, job, stg, task.lsn, datetime.now(UTC))
            conn.commit()
        return True
    except psycopg.errors.InsufficientPrivilege as exc:
        log.warning("snapshot: cannot create staging schema %s (%s); copying table by table in "
                    "one transaction instead (slower)", schema, exc.diag.message_primary)
        return False


def _run_staged(task: SnapshotTask, job: Job, tracker: ProgressTracker) -> None:
    name = job.info.name
    stg = Staging(staging_schema(task.source), job.info.source_oid)
    src = open_snapshot(task.source_dsn, task.snapshot_name)
    m = psycopg.connect(task.landing_dsn)
    c = psycopg.connect(task.landing_dsn)
    try:
        tracker.start(name)
        hold_against_rewrites(src, [job.info.source_oid])
        copy_staged(src, m, c, job, stg, lambda n: tracker.add(name, n),
                    lambda: tracker.copied(name))
        src.close()
        _stage_watermark(m, job, stg)
        rebuild_m, rebuild_c = job.rebuild
        started = time.monotonic()
        # The two index builds run in two backends at once.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidemark-index") as side:
            # The mirror is analyzed for the queries built on it; the append-only changelog is
            # left to autovacuum.
            settings = index_build_settings(m, job.result.rows)
            other = side.submit(build_indexes, c, rebuild_c, None, settings)
            build_indexes(m, rebuild_m, stg.ident("m"), settings)
            other.result()
        job.timings["index"] = time.monotonic() - started
        tracker.finish(name, job.result.rows)
        log.info("snapshot: %s: %s rows; %s", job.info.qualified, f"{job.result.rows:,}",
                 ", ".join(f"{k} {v:.2f} s" for k, v in job.timings.items()))
    finally:
        for conn in (src, m, c):
            conn.close()


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
