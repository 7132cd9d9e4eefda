"""Snapshot progress on the terminal: one bar per source (rows, tables, rows/s, ETA)."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ingestion.progress import SnapshotProgress


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


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
                      "eta": "finishing" if p.copied and not p.done else _eta(p.eta_s)}
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
