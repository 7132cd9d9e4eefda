"""The parallel part of a snapshot: the tables new to landing, loaded into staging tables.

Each of :func:`snapshot_workers` threads opens its connections once (a source connection that
imports the exported snapshot for each table in turn, and two landing connections, one per
staging table's load) and loads table after table with them until none is left. A connection
costs a backend's start and authentication (~20 ms under load): three new ones per table were
about a third of the per-table cost of a source of many small tables (bench/RESULTS.md, wide45).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ingestion.errors import SnapshotRewrittenError
from ingestion.progress import ProgressTracker
from ingestion.session_settings import pin_later_settings, pinned_dsn
from ingestion.snapcopy import Job, build_indexes, copy_staged
from ingestion.staging import Staging, staging_for

if TYPE_CHECKING:
    from ingestion.snapshot import SnapshotTask

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


def snapshot_connection(source_dsn: str) -> psycopg.Connection:
    """A source connection whose transactions are read-only and repeatable read, ready to
    import an exported snapshot (:func:`import_snapshot`)."""
    conn = pin_later_settings(psycopg.connect(pinned_dsn(source_dsn)))  # startup options, SETs
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def import_snapshot(conn: psycopg.Connection, snapshot_name: str) -> None:
    """Begin a transaction of ``conn`` (:func:`snapshot_connection`, idle) that sees exactly
    the exported snapshot. The snapshot stays importable while the replication connection
    that exported it stays idle, so one connection copies table after table, each in its own
    transaction (whose locks end with it)."""
    conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot_name)))


def open_snapshot(source_dsn: str, snapshot_name: str) -> psycopg.Connection:
    """A source connection whose transaction sees exactly the exported snapshot."""
    conn = snapshot_connection(source_dsn)
    import_snapshot(conn, snapshot_name)
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


def event_column(job: Job) -> str | None:
    """The job's event-time column (its contract's, when the table has it), or None."""
    column = getattr(job.contract, "event_time", None)
    return column if column and column in job.info.column_names else None


def stage_watermark(conn: psycopg.Connection, job: Job, stg: Staging) -> None:
    """In the table's worker, after the checks and the dedup: the latest event and commit times
    of its snapshot rows, as one row ``w_<oid>`` that the final transaction reads instead of
    the whole changelog (a scan less in the serial part)."""
    column = event_column(job)
    if column is None:
        return
    col = sql.Identifier(column)
    conn.execute(sql.SQL(
        "create table {} as select max({col}) as {col}, max(_commit_at) as _commit_at,"
        " 'r'::text as _op from {} where {col} is not null").format(
            stg.ident("w"), stg.ident("c"), col=col))
    conn.commit()


class _Worker:
    """One copy thread's connections: a snapshot source and two landing connections, and a
    side thread for the changelog's index build. Opened once, used for each table in turn."""

    def __init__(self, task: SnapshotTask) -> None:
        self.task = task
        self.conns: list[psycopg.Connection] = []
        self.side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidemark-index")
        try:
            self.src = self._keep(snapshot_connection(task.source_dsn))
            self.m = self._keep(psycopg.connect(task.landing_dsn))
            self.c = self._keep(psycopg.connect(task.landing_dsn))
        except BaseException:
            self.close()
            raise

    def _keep(self, conn: psycopg.Connection) -> psycopg.Connection:
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        """Close the connections and the side thread."""
        self.side.shutdown()
        for conn in self.conns:
            conn.close()

    def run(self, job: Job, tracker: ProgressTracker) -> None:
        """Load one table into its staging tables, checked and indexed; every landing
        transaction commits, the source transaction ends after the copy."""
        task, src, m, c = self.task, self.src, self.m, self.c
        name = job.info.name
        stg = staging_for(job.info)
        import_snapshot(src, task.snapshot_name)
        tracker.start(name)
        hold_against_rewrites(src, [job.info.source_oid])
        copy_staged(src, m, c, job, stg, lambda n: tracker.add(name, n),
                    lambda: tracker.copied(name))
        src.rollback()  # read only: ends the snapshot's transaction and its locks
        stage_watermark(m, job, stg)
        rebuild_m, rebuild_c = job.rebuild
        started = time.monotonic()
        # The two index builds run in two backends at once. The mirror is analyzed for the
        # queries built on it; the append-only changelog is left to autovacuum.
        settings = index_build_settings(m, job.result.rows)
        other = self.side.submit(build_indexes, c, rebuild_c, None, settings)
        build_indexes(m, rebuild_m, stg.ident("m"), settings)
        other.result()
        job.timings["index"] = time.monotonic() - started
        tracker.finish(name, job.result.rows)
        log.info("snapshot: %s: %s rows; %s", job.info.qualified, f"{job.result.rows:,}",
                 ", ".join(f"{k} {v:.2f} s" for k, v in job.timings.items()))


def start_staged(pool: ThreadPoolExecutor, task: SnapshotTask, jobs: list[Job],
                 tracker: ProgressTracker) -> list[Future]:
    """Load ``jobs`` (in this order) on ``task.workers`` threads of ``pool``, each with its own
    connections (:class:`_Worker`); return their futures. After a failure no thread starts
    another table."""
    pending = deque(jobs)
    failed = threading.Event()

    def work() -> None:
        worker = None
        try:
            worker = _Worker(task)
            while not failed.is_set():
                try:
                    job = pending.popleft()
                except IndexError:
                    return
                worker.run(job, tracker)
        except BaseException:
            failed.set()
            raise
        finally:
            if worker is not None:
                worker.close()

    return [pool.submit(work) for _ in range(min(max(1, task.workers), len(jobs)))]
