"""What ``tidemark up`` shows while it starts: rich progress bars, and the same for ``status``.

One bar per phase (database, seed, dbt parse, landing, build, Dagster) with units done, rate and
time left when the total is known. Phases report through :func:`tidemark.progress.report`; the
display also writes ``$TIDEMARK_HOME/up-progress.json`` (atomically, at most twice a second) so
``tidemark status`` in another terminal shows the same. On a terminal the bars are live; in a
log (not a terminal) each phase prints a line when it ends, and a progress line every
:data:`LOG_EVERY_S` seconds while it runs.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from tidemark.errors import AlreadyRunningError
from tidemark.progress import Progress as Report
from tidemark.settings import Settings, redact

if TYPE_CHECKING:
    from tidemark.stack.databases import Databases

STATUS_FILE = "up-progress.json"
LOG_EVERY_S = 10.0
WRITE_EVERY_S = 0.5


@dataclass
class PhaseState:
    """One phase as ``tidemark status`` reads it.

    Attributes:
        name: the phase (``seed``, ``landing``, ...).
        title: what it does, for a person.
        state: ``running``, ``done`` or ``failed``.
        done: units done.
        total: units in all, or None.
        unit: what is counted.
        detail: the current item.
        started_at: when it started (ISO, UTC).
        seconds: how long it took or has taken so far.
    """

    name: str
    title: str
    state: str = "running"
    done: float = 0
    total: float | None = None
    unit: str = ""
    detail: str = ""
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    seconds: float = 0.0
    _t0: float = field(default_factory=time.monotonic, repr=False)


class _Counts(ProgressColumn):
    """``12,000/158,000 rows  9,400/s`` (or just the count when the total is unknown)."""

    def render(self, task: Any) -> Text:
        unit = task.fields.get("unit", "")
        if not unit:
            return Text("")
        done = f"{task.completed:,.0f}"
        total = f"/{task.total:,.0f}" if task.total else ""
        speed = f"  {task.speed:,.0f}/s" if task.speed and task.total != 1 else ""
        return Text(f"{done}{total} {unit}{speed}")


class _Shrinking(ProgressColumn):
    """A text column that gives way on a narrow terminal: cut with an ellipsis, never wrapped
    (the counts and times beside it keep their width, and each phase stays on one line)."""

    def __init__(self, field_name: str, style: str = "") -> None:
        super().__init__()
        self.field_name, self.style = field_name, style

    def render(self, task: Any) -> Text:
        value = (task.description if self.field_name == "description"
                 else task.fields.get(self.field_name, ""))
        return Text(str(value), style=self.style, no_wrap=True, overflow="ellipsis")


class UpDisplay:
    """The progress of ``tidemark up``'s start, on screen and in the status file.

    Args:
        home: ``TIDEMARK_HOME`` (the status file goes there).
        console: where to draw (default: stdout).
    """

    def __init__(self, home: Path, console: Console | None = None) -> None:
        # Bound to the terminal's stream now: while a Dagster run executes, sys.stdout is sent
        # to a log file (tidemark.stack.build.quiet) but the bars keep drawing here.
        self.console = Console(file=console.file if console is not None else sys.stdout)
        self.path = home / STATUS_FILE
        self.live = self.console.is_terminal
        # Counts and times never wrap; title, bar and current item share what is left (an
        # 80-column terminal cut the counts to "5,0…" and spread each phase over 3 lines).
        self.bars = Progress(SpinnerColumn(), _Shrinking("description"),
                             BarColumn(bar_width=None, table_column=Column(max_width=20)),
                             _Counts(table_column=Column(no_wrap=True)),
                             TimeRemainingColumn(table_column=Column(no_wrap=True)),
                             TimeElapsedColumn(table_column=Column(no_wrap=True)),
                             _Shrinking("detail", style="dim"),
                             console=self.console, transient=False, disable=not self.live)
        self.phases: dict[str, PhaseState] = {}
        self.tasks: dict[str, TaskID] = {}
        self.status: dict[str, Any] = {"pid": os.getpid(), "state": "starting", "phases": []}
        self._lock = threading.Lock()
        self._written = 0.0
        self._logged: dict[str, float] = {}

    def __enter__(self) -> UpDisplay:
        self.bars.start()
        self._write(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    # -- phases -------------------------------------------------------------------------------

    def begin(self, name: str, title: str, total: float | None = None, unit: str = "") -> None:
        """Start a phase (a bar; an indeterminate one when ``total`` is None)."""
        with self._lock:
            self.phases[name] = PhaseState(name, title, total=total, unit=unit)
            self.tasks[name] = self.bars.add_task(title, total=total, unit=unit, detail="")
        self._write(force=True)

    def on_progress(self, report: Report) -> None:
        """A :func:`tidemark.progress.report` listener: move the phase's bar."""
        with self._lock:
            phase = self.phases.get(report.phase)
            if phase is None or phase.state != "running":
                return
            phase.done, phase.unit, phase.detail = report.done, report.unit, report.detail
            if report.total is not None:
                phase.total = report.total
            phase.seconds = round(time.monotonic() - phase._t0, 1)
            self.bars.update(self.tasks[report.phase], completed=report.done,
                             total=phase.total, unit=report.unit,
                             detail=_short(report.detail))
        self._log_line(phase)
        self._write()

    def end(self, name: str, summary: str) -> None:
        """Finish a phase: full bar, and ``summary`` printed under the bars."""
        with self._lock:
            phase = self.phases[name]
            phase.state, phase.seconds = "done", round(time.monotonic() - phase._t0, 1)
            total = phase.total or phase.done or 1
            self.bars.update(self.tasks[name], completed=total, total=total, detail="")
        self.say(f"{summary} [{phase.seconds:.1f} s]")
        self._write(force=True)

    def fail(self, message: str) -> None:
        """Mark the running phases failed and keep the reason for ``tidemark status``."""
        with self._lock:
            for phase in self.phases.values():
                if phase.state == "running":
                    phase.state = "failed"
            self.status.update(state="failed", error=message)
        self._write(force=True)

    def ready(self, banner: str) -> None:
        """Everything is up: record it and print the banner."""
        with self._lock:
            self.status.update(state="ready", ready_at=datetime.now(UTC).isoformat())
        self._write(force=True)
        self.bars.stop()
        # not wrapped by Rich: the URLs (long with the pgpass path) stay one line to copy
        self.console.print(banner, highlight=False, markup=False, soft_wrap=True)

    def stopped(self) -> None:
        """``tidemark up`` ended: the status file says so."""
        with self._lock:
            if self.status.get("state") != "failed":
                self.status["state"] = "stopped"
        self._write(force=True)

    def note(self, key: str, value: Any) -> None:
        """Record ``key`` in the status file (e.g. ``demo``: what the demo load does on
        purpose, so ``tidemark status`` can say which warnings it expects)."""
        with self._lock:
            self.status[key] = value
        self._write(force=True)

    def say(self, message: str) -> None:
        """Print a line for the person (above the live bars on a terminal; whole, never
        wrapped at Rich's 80 columns, when the output is a file or a pipe)."""
        self.console.print(message, highlight=False, soft_wrap=not self.live)

    # -- helpers ------------------------------------------------------------------------------

    def _log_line(self, phase: PhaseState) -> None:
        if self.live:
            return
        now = time.monotonic()
        if now - self._logged.get(phase.name, phase._t0) < LOG_EVERY_S:
            return
        self._logged[phase.name] = now
        total = f"/{phase.total:,.0f}" if phase.total else ""
        self.say(f"  {phase.title}: {phase.done:,.0f}{total} {phase.unit}"
                 f"{f' ({phase.detail})' if phase.detail else ''} after {phase.seconds:.0f} s")

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < WRITE_EVERY_S:
            return
        self._written = now
        with self._lock:
            payload = {**self.status, "updated_at": datetime.now(UTC).isoformat(),
                       "phases": [{k: v for k, v in asdict(p).items() if not k.startswith("_")}
                                  for p in self.phases.values()]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload, indent=1, default=str))
            tmp.replace(self.path)
        except OSError:
            pass  # the status file is a convenience; never fail the start for it


def _short(detail: str, width: int = 32) -> str:
    return detail if len(detail) <= width else "…" + detail[-(width - 1):]


def read_status(home: Path) -> dict[str, Any] | None:
    """What ``tidemark up`` wrote last (None: it never ran here), with ``running`` telling
    whether its process is alive."""
    try:
        data = json.loads((home / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    alive = False
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
            alive = True
        except OSError:
            alive = False
    data["running"] = alive and data.get("state") in ("starting", "ready")
    if data["running"]:  # a phase that reports nothing for a while (index builds) still ages
        now = datetime.now(UTC)
        for phase in data.get("phases", []):
            if phase.get("state") == "running" and phase.get("started_at"):
                try:
                    started = datetime.fromisoformat(phase["started_at"])
                except ValueError:
                    continue
                phase["seconds"] = round(max(phase.get("seconds", 0.0),
                                             (now - started).total_seconds()), 1)
    return data


def banner(dbs: Databases, settings: Settings, dagster_url: str | None) -> str:
    """What to connect to, printed once everything runs."""
    ui = [f"  Dagster UI:       {dagster_url}"] if dagster_url else []
    return "\n".join([
        "Tidemark is up.",
        *ui,
        f"  SQL (read-only):  psql {shlex.quote(dbs.reader)}",
        f"  source (admin):   {redact(dbs.source)}",
        "  try:  select * from live.daily_store_revenue order by order_date desc limit 5;",
        f"  status:           tidemark status    logs: {settings.log_dir}",
        "Ctrl-C stops everything; `tidemark up` again resumes where it left off.",
    ])


def refuse_second_up(settings: Settings) -> None:
    """Refuse to start beside a ``tidemark up`` that still runs on the same home.

    Two would share the database and Dagster's run storage: the second's start ends the
    first's runs (see :func:`tidemark.stack.dagster_proc.end_interrupted_runs`).

    Raises:
        AlreadyRunningError: the status file names a live ``tidemark`` process.
    """
    import psutil

    status = read_status(settings.home)
    if not status or not status["running"] or status.get("pid") == os.getpid():
        return
    try:
        command = " ".join(psutil.Process(status["pid"]).cmdline())
    except psutil.Error:
        return  # gone since, or not ours to see
    if "tidemark" in command:
        raise AlreadyRunningError(
            f"tidemark up is already running in {settings.home} (pid {status['pid']}); "
            f"`tidemark status` shows it. Stop it (Ctrl-C in its terminal, or "
            f"`kill {status['pid']}`) or use another TIDEMARK_HOME.")
