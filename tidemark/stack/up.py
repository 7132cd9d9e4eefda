"""``tidemark up``: the whole stack on one machine, in the foreground until Ctrl-C.

Start (with progress bars, see :mod:`tidemark.stack.display`): PostgreSQL; the demo source
and, on first start, its seeded history (:mod:`tidemark.stack.demo_source`); ``dbt parse``
(beside the seed); the Dagster webserver (it loads while the data is built); then what the
stack builds, as Dagster runs recorded in ``$TIDEMARK_HOME/dagster``
(:mod:`tidemark.stack.build`): the landing catch-up, then the live views, dbt models and marts
of the closed days, serving views and every check; then the continuous ingestion, the Dagster
daemon and the demo workload, and the banner. While it runs,
it prunes Dagster's run history once a day (:mod:`tidemark.stack.dagster_retention`).

A failure at any step is one message saying what failed and what to do (the unexpected ones
with the details in ``$TIDEMARK_HOME/logs/up-error.log``), and everything this run started is
stopped again — the database too, when this run started it. Ctrl-C or SIGTERM stop every
process cleanly; a second run reuses all data.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console

from tidemark import progress
from tidemark.errors import TidemarkError
from tidemark.settings import Settings
from tidemark.stack.databases import Databases, ensure_databases, locate_databases
from tidemark.stack.demo_source import (
    create_demo_source,
    seed_demo_history,
    source_is_empty,
    start_demo_load,
)
from tidemark.stack.display import UpDisplay, banner, read_status, refuse_second_up
from tidemark.stack.logrotate import CHECK_EVERY_S, rotate_logs
from tidemark.stack.snapshots import SnapshotWatch
from tidemark.stack.supervisor import Child, Restarts, Supervisor, describe_exit

if TYPE_CHECKING:
    from orchestration.defs.dbt.state import ParseFailure

DEMO_SOURCE = "shop"
UI_WAIT_S = 120.0
# Evaluated by the daemon right after the start instead of inside the build run: with the UI
# and daemon up, `dbt source freshness` (a dbt process of its own) need not delay the banner.
LATER_CHECKS = frozenset({"dbt_source_freshness"})
LATER_JOB = "source_freshness"
# Children started again when a signal kills them: they resume from their own state.
RESTARTED = frozenset({"ingest", "tick"})
# Never in the build: ingestion streams only after it, so a live view's freshness cannot be
# measured yet; the freshness_observer sensor judges it once ingestion runs.
MEASURED_CHECKS = frozenset({"freshness_slo"})


@dataclass(frozen=True)
class UpOptions:
    """What ``tidemark up`` runs.

    Attributes:
        seed_days: days of history written on first start (when the source is empty).
        orders_per_day: orders per seeded day.
        rate: demo workload in row changes per second (0: no workload).
        duration_s: stop by itself after this many seconds (None: until Ctrl-C).
        keep_db: leave the embedded PostgreSQL running on exit.
        seed: seed of the demo generator.
        dagster: run the Dagster webserver and daemon (the builds are Dagster runs either way).
    """

    seed_days: int = 7
    orders_per_day: int = 2000
    rate: float = 200.0
    duration_s: float | None = None
    keep_db: bool = False
    seed: int = 42
    dagster: bool = True


class Interrupted(Exception):
    """Ctrl-C or SIGTERM while the stack was starting."""


def tidemark_argv() -> list[str]:
    """How to run the ``tidemark`` CLI in a child process (the same interpreter as this one)."""
    return [sys.executable, "-m", "tidemark.cli.main"]


def child_env(settings: Settings) -> dict[str, str]:
    """Environment of this process and its children: the caller's plus the resolved settings."""
    env = dict(os.environ)
    env.update(TIDEMARK_HOME=str(settings.home), TIDEMARK_PG_PORT=str(settings.port),
               TIDEMARK_DBT_TARGET_PATH=str(settings.dbt_target_dir),
               DAGSTER_HOME=str(settings.dagster_home))
    return env


def run_up(settings: Settings, options: UpOptions, console: Console | None = None) -> int:
    """Start the stack, serve until Ctrl-C, SIGTERM or ``options.duration_s``, stop it.

    Returns:
        The exit code: 0 on a clean stop, 1 if a component died, 130 if interrupted while
        starting.

    Raises:
        TidemarkError: the start failed (everything this run started is stopped again).
    """
    return _Up(settings, options, UpDisplay(settings.home, console)).run()


class _Up:
    """One ``tidemark up``: what it started, so that every exit path stops exactly that."""

    def __init__(self, settings: Settings, options: UpOptions, display: UpDisplay) -> None:
        self.settings, self.options, self.display = settings, options, display
        self.supervisor = Supervisor(env=child_env(settings))
        self.restarts = Restarts(RESTARTED)
        self.stop = threading.Event()
        self.server = locate_databases(settings).server
        self.started_server = False
        self.load_thread: threading.Thread | None = None
        self.phase = "starting"
        self.interrupted = False
        self.parse: _Background | None = None
        self.previous: dict[str, Any] | None = None  # the status the last `tidemark up` left
        self.ui: str | None = None  # the Dagster UI, once it answers
        self.first_day: Any = None  # stack.partitions.FirstDayWatch, once started
        # UI backfills the last stop interrupted (stack.backfills); not `interrupted`, which says
        # whether this start was
        self.backfills: list = []

    def run(self) -> int:
        refuse_second_up(self.settings)
        self.previous = read_status(self.settings.home)
        os.environ.update(child_env(self.settings))
        try:
            with self.display, progress.listening(self.display.on_progress), \
                    self._interruptible():
                dbs, url = self._start()
                self.display.ready(banner(dbs, self.settings, url))
            return self._serve(dbs)
        except (Interrupted, KeyboardInterrupt):
            self.display.fail(f"interrupted while {self.phase}")
            self.display.say(f"Interrupted while {self.phase}; stopping what was started.")
            return 130
        except TidemarkError as exc:
            if self.interrupted:
                self.display.fail(f"interrupted while {self.phase}")
                self.display.say(f"Interrupted while {self.phase}; stopping what was started.")
                return 130
            self.display.fail(str(exc))
            raise
        except Exception as exc:  # a bug or an unforeseen failure: one message, details in a file
            raise self._unexpected(exc) from None
        finally:
            self._shutdown()

    # -- start --------------------------------------------------------------------------------

    def _start(self) -> tuple[Databases, str | None]:
        from tidemark.stack import build
        from tidemark.stack.backfills import find_interrupted, resume_in_background
        from tidemark.stack.dagster_proc import prepare_dagster_home, start_webserver, ui_url
        from tidemark.stack.dagster_retention import KEPT_PER_JOB, prune_daily
        from tidemark.stack.dbt import parse_project
        from tidemark.stack.partitions import FirstDayWatch, record_partitions_start

        settings, options, display = self.settings, self.options, self.display
        landing_url = locate_databases(settings).landing_dbt
        # dbt parse needs no database: it runs beside the start, the seed and the catch-up; so
        # do the imports of the Dagster and dbt libraries the build needs (seconds of CPU).
        parse_started = time.time()
        self.parse = _Background(lambda: parse_project(settings, landing_url))
        warm = _Background(_import_build_libraries)
        self.phase = "starting PostgreSQL"
        display.begin("database", "PostgreSQL")
        self.started_server = self.server is not None and not self.server.is_running()
        if self.server is not None and not self.started_server:
            self.started_server = self._adopt_server()
        display.note("started_server", self.started_server)
        dbs = ensure_databases(settings)
        display.end("database", f"PostgreSQL is up on 127.0.0.1:{settings.port}."
                    if self.server else "Using external PostgreSQL servers.")
        self._prepare_source(dbs)
        self.backfills = find_interrupted(prepare_dagster_home(settings))
        self.phase = "landing the source"
        display.begin("landing", "Landing (snapshot, catch-up)", unit="rows")
        build.catch_up(settings)
        display.end("landing", "Landing caught up with the source (Dagster run "
                               "ingestion_catch_up).")
        self.phase = "parsing the dbt project"
        display.begin("parse", "dbt parse (manifest)")
        dbt_failure = self._parsed(parse_started)
        manifest = settings.dbt_target_dir / "manifest.json"
        first_day = (record_partitions_start(settings, dbs.source, manifest)
                     if manifest.exists() else None)
        self.first_day = FirstDayWatch(settings, dbs.source, self._first_day_arrived)
        web = start_webserver(self.supervisor, settings) if options.dagster else None
        self.phase = "building live views, dbt models and checks"
        display.begin("build", "Building (Dagster run)", unit="assets+checks")
        warm.wait()
        builder = build.DagsterBuild(settings)
        try:
            plan = builder.plan(later=(LATER_CHECKS if options.dagster else frozenset())
                                | MEASURED_CHECKS, without_dbt=dbt_failure is not None)
            progress.report("build", 0, plan.expected_events, "assets+checks")
            builder.build(plan)
        finally:
            builder.close()
        days = ("dbt models, " + (f"daily marts {plan.first_day} to {plan.last_day}"
                                  if plan.first_day else "no closed day yet")
                if dbt_failure is None else "no dbt model (the project does not parse)")
        kept = f" ({plan.unchanged_views} unchanged)" if plan.unchanged_views else ""
        display.end("build", f"Built {len(plan.views)} live view(s){kept}, {days}, "
                             f"{len(plan.check_keys)} checks evaluated"
                             + (f" (partitions from {first_day})." if first_day else "."))
        self._start_ingestion()
        prune_daily(settings.dagster_home, settings.run_retention_days,  # its housekeeping
                    max(KEPT_PER_JOB, settings.correction_attempts), self.stop, display.say)
        url = None
        if web is not None:
            from tidemark.stack.dagster_proc import start_daemon, wait_for_ui

            self.phase = "starting Dagster"
            display.begin("dagster", "Dagster UI and daemon")
            daemon = start_daemon(self.supervisor, settings)
            url = ui_url(settings)
            wait_for_ui(url, [web, daemon], UI_WAIT_S)
            self.ui = url
            if dbt_failure is None:
                self._launch_later_checks(url)
            resume_in_background(url, self.backfills, self.display.say, self.stop)
            display.end("dagster", f"Dagster UI is up at {url}.")
        self.phase = "running"
        return dbs, url

    def _parsed(self, started: float) -> ParseFailure | None:
        """Wait for ``dbt parse``; a project that does not parse is recorded and said (the
        stack starts without building dbt), not fatal."""
        from tidemark.stack.dbt import DbtRunError, parse_outcome

        try:
            self.parse.wait()
        except DbtRunError as exc:
            failure, kept = parse_outcome(self.settings, started, exc)
            self.display.end("parse", f"dbt parse FAILED at {failure.headline()}")
            self.display.say(f"  {kept}")
            return failure
        parse_outcome(self.settings, started, None)
        self.display.end("parse", "dbt project parsed.")
        return None

    def _adopt_server(self) -> bool:
        """True when the running server is the one a ``tidemark up`` started and did not stop
        (it was killed): this run then stops it at its end, as that one would have."""
        prev = self.previous or {}
        if prev.get("running") or not prev.get("started_server") or \
                prev.get("state") not in ("starting", "ready"):
            return False
        self.display.say(f"The last `tidemark up` (pid {prev.get('pid')}) ended without "
                         "stopping what it started; using the PostgreSQL it left running "
                         "(stopped at the end as usual).")
        return True

    def _launch_later_checks(self, url: str) -> None:
        """Queue the checks left out of the build (``dbt source freshness``: a dbt process of
        its own) for the daemon, as its schedule would; a refusal is reported, not fatal."""
        from tidemark.errors import DagsterStartError
        from tidemark.stack.dagster_proc import launch_job

        try:
            launch_job(url, LATER_JOB, {"tidemark/trigger": "tidemark up"})
        except DagsterStartError as exc:
            self.display.say(f"{exc} It runs on its schedule instead.")

    def _prepare_source(self, dbs: Databases) -> None:
        """Create and register the demo source and, on first start, seed its history."""
        options = self.options
        self.phase = "creating the demo source"
        create_demo_source(dbs, self.settings, self.display.say)
        if not source_is_empty(dbs.source) or options.seed_days <= 0:
            return
        self.phase = "seeding the demo history"
        seed_demo_history(dbs.source, options.seed_days, options.orders_per_day, options.seed,
                          self.display)

    def _start_ingestion(self) -> None:
        """Start the continuous CDC stream of every registered source, the demo and the
        user's own (`tidemark ingest run`), and the live views' clock (`tidemark views tick
        --every 1`), as supervised children."""
        self.supervisor.start("ingest", [*tidemark_argv(), "ingest", "run"],
                              self.settings.log_dir / "ingest.log")
        # the clock of temporal filters (mz_now(), @retention): expire and admit rows each second
        self.supervisor.start("tick", [*tidemark_argv(), "views", "tick", "--every", "1"],
                              self.settings.log_dir / "tick.log")

    # -- serve and stop -----------------------------------------------------------------------

    def _serve(self, dbs: Databases) -> int:
        previous = signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        try:
            self.load_thread = start_demo_load(dbs.source, self.settings, self.options.rate,
                                               self.options.seed, self.stop, self.display)
            deadline = (None if self.options.duration_s is None
                        else time.monotonic() + self.options.duration_s)
            next_rotation = time.monotonic()
            snapshots = SnapshotWatch(dbs.landing_app, self.display.say)
            while not self.stop.is_set():
                snapshots.poll()  # a registered source's snapshot, said every 10 s
                if time.monotonic() >= next_rotation:
                    rotate_logs(self.settings.log_dir, int(self.settings.log_max_mb * 2**20),
                                self.settings.log_keep)
                    if self.first_day is not None:
                        self.first_day.poll()
                    next_rotation = time.monotonic() + CHECK_EVERY_S
                dead = self.supervisor.exited()
                if dead and not self._restart(dead):
                    return 1
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.stop.wait(0.5)
        except KeyboardInterrupt:
            self.display.say("Stopping...")
        finally:
            signal.signal(signal.SIGTERM, previous)
        return 0

    def _first_day_arrived(self, day: Any) -> None:
        from tidemark.stack.dagster_proc import reload_code_location

        reloaded = self.ui is not None and reload_code_location(self.ui)
        self.display.say(f"First day of data: {day}; the daily partitions start there"
                         + (" (Dagster reloaded its definitions)." if reloaded else "."))

    def _restart(self, dead: list[Child]) -> bool:
        """Start again the children a signal killed (the ingestion and the clock resume from
        their own state); False, after saying why, when one may not be restarted."""
        delays = {child.name: self.restarts.delay(child) for child in dead}
        for child in dead:
            what = f"{child.name} {describe_exit(child.process.returncode)}"
            if delays[child.name] is None:
                self.display.say(f"{what}; see {child.log}")
                continue
            self.display.say(f"{what}; restarting it in {delays[child.name]:g} s (restart "
                             f"{self.restarts.count(child.name)} of at most "
                             f"{self.restarts.limit} in {self.restarts.window_s / 60:g} "
                             f"minutes; it resumes where it stopped). See {child.log}")
        if any(delay is None for delay in delays.values()):
            return False
        if self.stop.wait(max(d for d in delays.values() if d is not None)):
            return True  # Ctrl-C meanwhile: _serve's loop ends
        for child in dead:
            self.supervisor.restart(child)
        return True

    def _shutdown(self) -> None:
        self.stop.set()
        if self.parse is not None:
            self.parse.thread.join(timeout=120)  # dbt parse writes files: let it finish
        if self.load_thread is not None:
            self.load_thread.join(timeout=30)
        if self.ui is not None:
            from tidemark.stack.backfills import remember_stopped
            from tidemark.stack.dagster_proc import cancel_active_runs, dagster_home

            # before the daemon goes: canceled, not failed; a backfill's resumed at the next start
            remember_stopped(dagster_home(self.settings), cancel_active_runs(self.ui))
        self.supervisor.stop_all()
        if self.started_server and not self.options.keep_db and self.server is not None:
            try:
                if self.server.stop():
                    self.display.say(f"PostgreSQL stopped; data kept in {self.settings.pgdata}.")
            except TidemarkError as exc:
                self.display.say(f"PostgreSQL did not stop cleanly: {exc}")
        elif self.server is not None and not self.options.keep_db and \
                self.server.is_running():
            self.display.say("PostgreSQL left running: it was running before `tidemark up` "
                             "started (e.g. started by `tidemark source add` or `tidemark db "
                             "start`); `tidemark db stop` stops it.")
        self.display.stopped()

    def _unexpected(self, exc: BaseException) -> TidemarkError:
        log = self.settings.log_dir / "up-error.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"--- tidemark up failed while {self.phase} at {time.ctime()}\n")
                out.write("".join(traceback.format_exception(exc)))
        except OSError:
            pass
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = (f"tidemark up failed while {self.phase}: {type(exc).__name__}"
                   f"{': ' + reason if reason else ''}. The details are in {log}. Everything "
                   f"this run started was stopped; fix the cause and run `tidemark up` again "
                   f"(what was built is kept).")
        self.display.fail(message)
        return TidemarkError(message)

    @contextmanager
    def _interruptible(self) -> Iterator[None]:
        """While starting, SIGTERM interrupts like Ctrl-C does."""
        def interrupt(signum: int, frame: Any) -> None:
            self.interrupted = True
            raise Interrupted(signal.Signals(signum).name)

        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            yield
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)


def _import_build_libraries() -> None:
    """Import what the build run needs (dagster, dagster-dbt, dbt's adapter) ahead of it."""
    import dagster  # noqa: F401
    import dagster_dbt  # noqa: F401
    import dbt.adapters.factory
    import dbt.adapters.postgres
    import dbt.config.runtime  # noqa: F401


class _Background:
    """Run ``fn`` in a thread; :meth:`wait` returns when it is done (re-raising its error)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised in the caller's thread by wait()
            self.error = exc

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error
