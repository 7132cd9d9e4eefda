"""Snapshot progress: on a terminal one bar per source (rows, tables, rows/s, ETA); in a log (not
a terminal: `tidemark up`'s ``ingest.log``, a service's journal) a line per source every
:data:`LOG_EVERY_S` seconds while its snapshot runs."""

from __future__ import annotations

import logging
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ingestion.progress import SnapshotProgress
from tidemark.stack.snapshots import eta_text

LOG_EVERY_S = 10.0


class SnapshotDisplay:
    """A callback for ``on_progress`` that draws rich progress bars while snapshots run.

    Args:
        console: where to draw.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = self._new()
        self.tasks: dict[str, int] = {}
        self.done: set[str] = set()
        self.lock = threading.Lock()
        self.started = False

    def _new(self) -> Progress:
        return Progress(
            TextColumn("snapshot [bold]{task.fields[source]}[/]"), BarColumn(),
            TextColumn("{task.fields[rows]} rows"), TextColumn("{task.fields[tables]} tables"),
            TextColumn("{task.fields[rate]} rows/s"), TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(), console=self.console, transient=False)

    def __call__(self, p: SnapshotProgress) -> None:
        """Show the latest progress of a source's snapshot."""
        with self.lock:
            if not self.started:
                self.progress.start()
                self.started = True
            task = self.tasks.get(p.source)
            fields = {"source": p.source, "tables": f"{p.tables_done}/{p.tables_total}",
                      "rows": f"{p.rows:,}" + (f"/{p.rows_estimate:,}" if p.rows_estimate
                                               else ""),
                      "rate": f"{p.rows_per_s:,.0f}",
                      "eta": "finishing" if p.copied and not p.done else eta_text(p.eta_s)}
            total = max(p.rows_estimate or 0, p.rows, 1)
            if task is None:
                task = self.tasks[p.source] = self.progress.add_task(p.source, total=total,
                                                                     **fields)
            self.progress.update(task, completed=total if p.done else p.rows, total=total,
                                 **fields)
            if p.done:
                self.done.add(p.source)
            if self.done >= set(self.tasks):
                # Every snapshot ended: the bars stay printed, streaming logs go on below.
                self.progress.stop()
                self.started = False
                self.progress = self._new()
                self.tasks.clear()
                self.done.clear()

    def close(self) -> None:
        """Stop drawing."""
        with self.lock:
            if self.started:
                self.progress.stop()
                self.started = False


class SnapshotLog:
    """A callback for ``on_progress`` that logs where each source's snapshot stands, at most
    every ``every_s`` seconds (INFO, logger ``tidemark.ingestion``).

    Without it a snapshot logged nothing between its start and each table's end: under
    `tidemark up` (whose ingestion writes ``ingest.log``) the 10 M rows of ``pgbench -s 100``
    passed in 71 s without a line, 66 s of them on one table. The end of each table and of the
    snapshot are logged by the snapshot itself.

    Args:
        every_s: seconds between two lines of a source (the first comes ``every_s`` after the
            snapshot's start).
    """

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self.last: dict[str, float] = {}
        self.lock = threading.Lock()
        self.log = logging.getLogger("tidemark.ingestion")

    def __call__(self, p: SnapshotProgress) -> None:
        """Log the progress of a source's snapshot if its last line is ``every_s`` old."""
        now = time.monotonic()
        with self.lock:
            if p.done:
                self.last.pop(p.source, None)
                return
            if now - self.last.get(p.source, p.started) < self.every_s:
                return
            self.last[p.source] = now
        self.log.info("%s", describe(p))

    def close(self) -> None:
        """Nothing to stop (the same interface as :class:`SnapshotDisplay`)."""


def describe(p: SnapshotProgress) -> str:
    """One line: ``snapshot of appa: 4,100,000/10,204,100 rows, 4/5 tables, 202,615 rows/s,
    ETA 0:30; copying pgbench_accounts``."""
    rows = f"{p.rows:,}" + (f"/{p.rows_estimate:,}" if p.rows_estimate else "")
    line = (f"snapshot of {p.source}: {rows} rows, {p.tables_done}/{p.tables_total} tables, "
            f"{p.rows_per_s:,.0f} rows/s, ")
    copying = [t for t in p.current if t not in p.finishing]
    if p.copied:
        line += "all rows in"
    else:
        line += f"ETA {eta_text(p.eta_s)}"
    if copying:
        line += f"; copying {', '.join(copying)}"
    if p.finishing:
        line += f"; finishing {', '.join(p.finishing)} (checks, index builds)"
    return line


def snapshot_callback(console: Console) -> SnapshotDisplay | SnapshotLog:
    """Bars on a terminal, log lines otherwise."""
    return SnapshotDisplay(console) if console.is_terminal else SnapshotLog()
