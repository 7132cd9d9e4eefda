"""``tidemark up``: the whole stack on one machine, in the foreground until Ctrl-C.

Steps: start (or reuse) PostgreSQL, create the demo source and seed its history once, start the
parts that run as processes, run the demo workload, and on Ctrl-C / SIGTERM stop every process
cleanly (and the database, if this run started it). A second run reuses all data.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from tidemark.settings import Settings, redact
from tidemark.stack.databases import Databases, ensure_databases, locate_databases
from tidemark.stack.supervisor import Supervisor


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
        dagster: run the Dagster webserver and daemon.
    """

    seed_days: int = 7
    orders_per_day: int = 2000
    rate: float = 200.0
    duration_s: float | None = None
    keep_db: bool = False
    seed: int = 42
    dagster: bool = True


Say = Callable[[str], None]


def source_is_empty(source_dsn: str) -> bool:
    """Whether the demo source holds no orders yet."""
    with psycopg.connect(source_dsn) as conn:
        return conn.execute("select not exists (select 1 from orders)").fetchone()[0]


def prepare_source(dbs: Databases, options: UpOptions, say: Say) -> None:
    """Create the demo schema and, on first start, seed its history."""
    from tidemark.demo.schema import apply_schema
    from tidemark.demo.seed import seed_history

    apply_schema(dbs.source)
    if source_is_empty(dbs.source) and options.seed_days > 0:
        say(f"Seeding {options.seed_days} days of demo history "
            f"({options.orders_per_day} orders a day)...")
        seed_history(dbs.source, days=options.seed_days, orders_per_day=options.orders_per_day,
                     seed=options.seed)


def land_source(dbs: Databases, say: Say) -> None:
    """Snapshot (first time) and catch up the demo source into landing, in this process.

    Done before the long-running stream starts, so that live views and marts are built on a
    complete landing database.
    """
    import ingestion
    from contracts import load_contracts

    stats = ingestion.catch_up(dbs.source_ingest, dbs.landing_app, "shop",
                               contracts=load_contracts(), setup_dsn=dbs.source)
    say(f"Landing caught up with the source: {stats.snapshot_rows:,} snapshot rows and "
        f"{stats.changes:,} changes in {stats.seconds:.1f} s.")


def deploy_live_views(dbs: Databases, say: Say) -> None:
    """Deploy the shipped live views on the landing mirror (unchanged views are left alone)."""
    import streaming_views

    results = streaming_views.deploy(dbs.landing_app)
    changed = [r.name for r in results if r.action != "unchanged"]
    say(f"Live views: {len(results)} deployed in schema live"
        + (f" ({', '.join(changed)} built)." if changed else ", all unchanged."))


def build_marts(dbs: Databases, settings: Settings, say: Say) -> None:
    """Build the dbt project once landing is filled.

    The first time, every day landed so far; afterwards dbt's nightly window (today and the
    correction days before it), which is what the nightly schedule rebuilds too.
    """
    from tidemark.stack.dbt import day_range_vars, run_dbt

    with psycopg.connect(dbs.landing) as conn:
        built = conn.execute("select to_regclass('marts.fct_daily_store_revenue') is not null"
                             ).fetchone()[0]
        first, last = conn.execute(
            "select min(placed_at)::date, max(placed_at)::date from shop.orders").fetchone()
    work_dir = settings.home / "dbt"
    # Unit tests are fixtures for CI (pytest runs them); production builds leave them out, as
    # dbt recommends: their fixed fixture days would fall outside the day window built here.
    build = ["build", "--exclude-resource-type", "unit_test"]
    if built or first is None:
        say("Building daily marts for the correction window (dbt build)...")
        run_dbt(build, dbs.landing_app, work_dir, log=settings.log_dir / "dbt.log")
    else:
        say(f"Building daily marts for {first} to {last} (dbt build)...")
        run_dbt(build, dbs.landing_app, work_dir, vars=day_range_vars(first, last),
                log=settings.log_dir / "dbt.log")
    say("Daily marts are built (schema marts).")


def start_ingestion(supervisor: Supervisor, settings: Settings) -> None:
    """Start the continuous CDC stream (`tidemark ingest run`) as a supervised child."""
    supervisor.start("ingest", [*tidemark_argv(), "ingest", "run"],
                     settings.log_dir / "ingest.log")


def tidemark_argv() -> list[str]:
    """How to run the ``tidemark`` CLI in a child process (the same interpreter as this one)."""
    return [sys.executable, "-m", "tidemark.cli.main"]


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for child processes: the caller's plus the resolved Tidemark settings."""
    env = dict(os.environ)
    env["TIDEMARK_HOME"] = str(settings.home)
    env["TIDEMARK_PG_PORT"] = str(settings.port)
    return env


def banner(dbs: Databases, settings: Settings, dagster_url: str | None) -> str:
    """What to connect to, printed once everything runs."""
    ui = [f"  Dagster UI:       {dagster_url}"] if dagster_url else []
    return "\n".join([
        "Tidemark is up.",
        *ui,
        f"  SQL (read-only):  psql {dbs.reader}",
        f"  source (admin):   {redact(dbs.source)}",
        "  try:  select * from live.daily_store_revenue order by order_date desc limit 5;",
        f"  logs:             {settings.log_dir}",
        "Ctrl-C stops everything; `tidemark up` again resumes where it left off.",
    ])


def run_up(settings: Settings, options: UpOptions, say: Say = print) -> int:
    """Run the stack until Ctrl-C, SIGTERM or ``options.duration_s``.

    Returns:
        The process exit code: 0 on a clean stop, 1 if a component died.
    """
    server = locate_databases(settings).server
    was_running = server is None or server.is_running()
    dbs = ensure_databases(settings)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    supervisor = Supervisor(env=child_env(settings))
    load_thread: threading.Thread | None = None
    code = 0
    try:
        prepare_source(dbs, options, say)
        land_source(dbs, say)
        deploy_live_views(dbs, say)
        build_marts(dbs, settings, say)
        start_ingestion(supervisor, settings)
        dagster_url = None
        if options.dagster:
            from tidemark.stack.dagster_proc import start_dagster

            say("Starting Dagster (webserver and daemon)...")
            dagster_url = start_dagster(supervisor, settings)
        say(banner(dbs, settings, dagster_url))
        load_thread = _start_load(dbs, options, stop, say)
        deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
        while not stop.is_set():
            dead = supervisor.exited()
            if dead:
                for child in dead:
                    say(f"{child.name} exited with {child.process.returncode}; see {child.log}")
                code = 1
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.5)
    except KeyboardInterrupt:
        say("Stopping...")
    finally:
        stop.set()
        if load_thread is not None:
            load_thread.join(timeout=30)
        supervisor.stop_all()
        signal.signal(signal.SIGTERM, previous)
        if not was_running and not options.keep_db and dbs.server is not None:
            dbs.server.stop()
            say(f"PostgreSQL stopped; data kept in {settings.pgdata}.")
    return code


def _start_load(dbs: Databases, options: UpOptions, stop: threading.Event,
                say: Say) -> threading.Thread | None:
    if options.rate <= 0:
        return None
    from tidemark.demo.load import run_load

    def work() -> None:
        try:
            stats = run_load(dbs.source, rate=options.rate, duration_s=float("inf"),
                             seed=options.seed, stop=stop)
            say(f"Demo workload stopped: {stats.changes:,} changes in {stats.elapsed_s:.0f} s "
                f"({stats.changes / max(stats.elapsed_s, 1e-9):,.0f}/s).")
        except Exception as exc:  # reported, then the whole stack stops
            say(f"Demo workload failed: {exc}")
            stop.set()

    thread = threading.Thread(target=work, name="demo-load", daemon=True)
    thread.start()
    say(f"Demo workload: {options.rate:g} changes/s on the source.")
    return thread
