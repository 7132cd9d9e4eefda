"""Progress of a snapshot: rows, tables, rows/s and ETA, for a callback and for
``tidemark.snapshot_progress`` (read by ``tidemark ingest status`` and ``tidemark up``).

Rows are counted as the COPY relay passes them on; the landing table is written at most once a
second from its own connection, so a status command sees a running snapshot move. Rows of a
source stay after the snapshot (``state = 'done'``, with its LSN): a table snapshotted while
streaming ran keeps the LSN below which the stream skips its changes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ingestion.lsn import lsn_to_str

log = logging.getLogger("tidemark.ingestion")

PROGRESS_DDL = """
    create table if not exists tidemark.snapshot_progress (
        source text not null,
        table_name text not null,
        snapshot_lsn pg_lsn,
        state text not null,
        rows_copied bigint not null default 0,
        rows_estimate bigint,
        started_at timestamptz,
        finished_at timestamptz,
        updated_at timestamptz not null default now(),
        primary key (source, table_name)
    )"""
STALE_S = 60.0


@dataclass
class SnapshotProgress:
    """Where a snapshot stands (passed to the ``on_progress`` callback).

    Attributes:
        source: source name.
        tables_total: tables in this snapshot.
        tables_done: tables copied so far.
        rows: rows copied so far.
        rows_estimate: rows expected (the source's statistics), or None if unknown.
        current: tables being copied now.
        finishing: tables of ``current`` whose rows are all in: their checks, deduplication,
            index builds and ANALYZE run.
        done: True once the snapshot committed.
        started: ``time.monotonic()`` at the start.
    """

    source: str
    tables_total: int
    tables_done: int = 0
    rows: int = 0
    rows_estimate: int | None = None
    current: tuple[str, ...] = ()
    finishing: tuple[str, ...] = ()
    done: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the snapshot started."""
        return time.monotonic() - self.started

    @property
    def rows_per_s(self) -> float:
        """Average copy rate so far."""
        return self.rows / max(self.elapsed_s, 1e-6)

    @property
    def copied(self) -> bool:
        """Every table's rows are in: what is left is the finishing of :attr:`finishing` (checks,
        index builds) and the landing commit (the swap, the checkpoint)."""
        return self.tables_done + len(self.finishing) >= self.tables_total

    @property
    def eta_s(self) -> float | None:
        """Seconds left of the copy at the current rate, when the total is known; None once
        every row is in (:attr:`copied`: the rows say nothing about the finishing left)."""
        if self.done:
            return 0.0
        if not self.rows_estimate or self.rows == 0 or self.copied:
            return None
        return max(self.rows_estimate - self.rows, 0) / max(self.rows_per_s, 1e-6)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"source": self.source, "tables_total": self.tables_total,
                "tables_done": self.tables_done, "rows": self.rows,
                "rows_estimate": self.rows_estimate, "rows_per_s": round(self.rows_per_s, 1),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
                "elapsed_s": round(self.elapsed_s, 1), "current": list(self.current),
                "finishing": list(self.finishing), "done": self.done}


ProgressCallback = Callable[[SnapshotProgress], None]


def ensure_progress_table(conn: psycopg.Connection) -> None:
    """Create ``tidemark.snapshot_progress`` if missing."""
    conn.execute("create schema if not exists tidemark")
    conn.execute(PROGRESS_DDL)


class ProgressTracker:
    """Thread-safe row counter that reports to a callback and to the landing state table.

    Args:
        landing_dsn: landing URL (its own autocommit connection writes the state rows).
        source: source name.
        lsn: the snapshot's LSN.
        tables: (landing table name, estimated rows or None) of every table in the snapshot.
        callback: called at most every ``interval_s`` and at every table's end.
        replace_all: True for a full snapshot (the source's old rows are removed first).
    """

    def __init__(self, landing_dsn: str, source: str, lsn: int,
                 tables: list[tuple[str, int | None]], callback: ProgressCallback | None = None,
                 replace_all: bool = True, interval_s: float = 1.0) -> None:
        known = [n for _, n in tables if n is not None]
        self.shown: dict[str, Any] | None = None  # set by close(): what `ingest status` shows
        self.progress = SnapshotProgress(source, len(tables),
                                         rows_estimate=sum(known) if known else None)
        self.callback = callback
        self.interval_s = interval_s
        self.lock = threading.Lock()
        self.rows_by_table: dict[str, int] = {name: 0 for name, _ in tables}
        self.active: list[str] = []
        self.finishing: list[str] = []
        self.dirty: set[str] = set()
        self.last_report = 0.0
        self.conn = psycopg.connect(landing_dsn, autocommit=True)
        ensure_progress_table(self.conn)
        names = [name for name, _ in tables]
        if replace_all:
            self.conn.execute("delete from tidemark.snapshot_progress where source = %s",
                              (source,))
        else:
            self.conn.execute("delete from tidemark.snapshot_progress where source = %s and"
                              " table_name = any(%s)", (source, names))
        with self.conn.cursor() as cur:
            cur.executemany(
                "insert into tidemark.snapshot_progress (source, table_name, snapshot_lsn,"
                " state, rows_estimate, started_at) values (%s, %s, %s, 'pending', %s, now())",
                [(source, name, lsn_to_str(lsn), est) for name, est in tables])
        self.stopped = threading.Event()
        self.heartbeat = threading.Thread(target=self._beat, args=(STALE_S / 6,), daemon=True,
                                          name="tidemark-snapshot-progress")
        self.heartbeat.start()

    def _beat(self, every_s: float) -> None:
        """Report the tables being copied every ``every_s`` seconds, rows or not.

        After its copy a table's checks, deduplication, index builds and ANALYZE pass no row
        on: at 10x (18M rows, a landing at default settings) the last 54 s of the snapshot
        reported nothing, and past :data:`STALE_S` ``tidemark ingest status`` calls a running
        snapshot ``interrupted`` (the process died) while its bar stands still.
        """
        while not self.stopped.wait(every_s):
            with self.lock:
                self.dirty.update(self.active)
            self._report(force=True)

    def start(self, table: str) -> None:
        """A table's copy begins."""
        with self.lock:
            self.active.append(table)
            self.progress.current = tuple(self.active)
            self.dirty.add(table)
        self._report(force=True)

    def add(self, table: str, rows: int) -> None:
        """``rows`` more rows of ``table`` were copied."""
        with self.lock:
            self.rows_by_table[table] = self.rows_by_table.get(table, 0) + rows
            self.progress.rows += rows
            self.dirty.add(table)
        self._report()

    def copied(self, table: str) -> None:
        """Every row of ``table`` is in; its checks, deduplication and indexes begin."""
        with self.lock:
            self.finishing.append(table)
            self.progress.finishing = tuple(self.finishing)
            self.dirty.add(table)
        self._report(force=True)

    def finish(self, table: str, rows: int | None = None) -> None:
        """A table's copy (and its checks) ended; ``rows`` is its exact row count."""
        with self.lock:
            if table in self.finishing:
                self.finishing.remove(table)
            self.progress.finishing = tuple(self.finishing)
            if rows is not None:
                self.progress.rows += rows - self.rows_by_table.get(table, 0)
                self.rows_by_table[table] = rows
            if table in self.active:
                self.active.remove(table)
            self.progress.current = tuple(self.active)
            self.progress.tables_done += 1
            self.dirty.add(table)
        self._report(force=True, state="copied", tables=[table])

    def _report(self, force: bool = False, state: str | None = None,
                tables: list[str] | None = None) -> None:
        now = time.monotonic()
        with self.lock:
            if not force and now - self.last_report < self.interval_s:
                return
            self.last_report = now
            dirty, self.dirty = self.dirty, set()
            rows = {t: self.rows_by_table.get(t, 0) for t in dirty}
            active, finishing = set(self.active), set(self.finishing)
            snapshot = SnapshotProgress(**{**self.progress.__dict__})
        if self.callback is not None:
            with contextlib.suppress(Exception):
                self.callback(snapshot)
        try:
            with self.conn.cursor() as cur:
                cur.executemany(
                    "update tidemark.snapshot_progress set rows_copied = %s, state = %s,"
                    " updated_at = now() where source = %s and table_name = %s",
                    [(n, state if tables and t in tables else
                      "finishing" if t in finishing else
                      "copying" if t in active else "pending", self.progress.source, t)
                     for t, n in rows.items()])
        except psycopg.Error as exc:
            log.debug("snapshot progress not recorded: %s", exc)

    def close(self, done: bool) -> None:
        """Report the end: ``done`` after the landing commit, else the snapshot failed; then
        :attr:`shown` holds the snapshot as ``tidemark ingest status`` shows it (its rows/s
        and elapsed time are what the log line says too)."""
        self.stopped.set()
        self.heartbeat.join()
        with self.lock:
            self.progress.done = done
            self.progress.current = self.progress.finishing = ()
            snapshot = SnapshotProgress(**{**self.progress.__dict__})
        if self.callback is not None and done:
            with contextlib.suppress(Exception):
                self.callback(snapshot)
        with contextlib.suppress(psycopg.Error):
            self.conn.execute(
                "update tidemark.snapshot_progress set state = %s, finished_at = now(),"
                " updated_at = now() where source = %s and table_name = any(%s)",
                ("done" if done else "failed", self.progress.source, list(self.rows_by_table)))
            self.shown = read_progress(self.conn, self.progress.source)
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


def read_progress(conn: psycopg.Connection, source: str) -> dict[str, Any] | None:
    """The latest snapshot of ``source`` as ``tidemark ingest status`` shows it, or None.

    ``state`` is ``running``, ``interrupted`` (no progress for a minute: the process died; the
    next start begins again), ``failed`` or ``done``. ``finishing`` names the tables whose rows
    are all in and whose checks and index builds run; once no table is left to copy, ``eta_s``
    is None (it times the copy only). The latest snapshot is the rows of the
    latest snapshot LSN: a table that joined while streaming, or a resync, is copied alone, with
    its own start, rows and rate (the initial snapshot's rows stay, with their older LSN).
    """
    if conn.execute("select to_regclass('tidemark.snapshot_progress')").fetchone()[0] is None:
        return None
    row = conn.execute(
        "select count(*), count(*) filter (where state in ('copied', 'done')),"
        " sum(rows_copied), sum(rows_estimate), bool_or(state in ('pending', 'copying',"
        " 'finishing', 'copied')), bool_or(state = 'failed'),"
        " extract(epoch from max(coalesce(finished_at, now())) - min(started_at)),"
        " extract(epoch from now() - max(updated_at)), max(snapshot_lsn)::text,"
        " coalesce(array_agg(table_name order by table_name) filter (where state ="
        " 'finishing'), '{}'), bool_or(state in ('pending', 'copying'))"
        " from tidemark.snapshot_progress where source = %s and snapshot_lsn ="
        " (select max(snapshot_lsn) from tidemark.snapshot_progress where source = %s)",
        (source, source)).fetchone()
    if not row[0]:
        return None
    total, done, rows, estimate, running, failed, elapsed, idle, lsn, finishing, copying = row
    state = "done"
    if running:
        state = "interrupted" if idle is not None and float(idle) > STALE_S else "running"
    elif failed:
        state = "failed"
    rows = int(rows or 0)
    rate = rows / max(float(elapsed or 0), 1e-6) if rows else 0.0
    eta = None
    if state == "running" and copying and estimate and rate > 0:
        eta = round(max(int(estimate) - rows, 0) / rate, 1)
    return {"state": state, "tables_total": int(total), "tables_done": int(done),
            "rows": rows, "rows_estimate": int(estimate) if estimate is not None else None,
            "rows_per_s": round(rate, 1), "eta_s": eta,
            "elapsed_s": round(float(elapsed or 0), 1), "snapshot_lsn": lsn,
            "finishing": list(finishing) if state == "running" else []}
