"""Ingestion jobs: ``ingestion_catch_up`` (one-shot catch-up, without the long-running
process), ``ingestion_resync`` (one table or all from a fresh snapshot), ``dead_letter_replay``."""

import inspect
import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from orchestration.defs.ingestion.assets import states
from orchestration.defs.resources import TidemarkResource
from tidemark import progress

LOG_EVERY_S = 5.0


def _observations(tidemark: TidemarkResource) -> list[dg.AssetObservation]:
    return [dg.AssetObservation(key, metadata=s.metadata()) for key, s in states(tidemark).items()]


def _sources(only: str) -> list[str]:
    from contracts import load_contracts

    sources = load_contracts().sources()
    if only and only not in sources:
        raise dg.Failure(f"No contracts for source {only!r}; known sources: "
                         f"{', '.join(sources) or 'none'} (contracts/<source>/).")
    return [only] if only else sources


def progress_fields(args: tuple, kwargs: dict[str, Any]) -> tuple[str, float, float | None]:
    """(table, rows done, rows in all) from a snapshot progress callback's arguments.

    Accepts ``(table, done, total)`` positionally or by name, or one object or dict with
    ``table`` and ``rows``/``done``/``rows_done`` and ``total``/``rows_total`` (the ingestion
    part's snapshot progress callback).
    """
    if len(args) == 1 and not kwargs:
        item = args[0]
        kwargs = dict(item) if isinstance(item, dict) else vars(item)
        args = ()
    table = str(args[0] if args else kwargs.get("table", ""))
    done = args[1] if len(args) > 1 else next(
        (kwargs[k] for k in ("rows", "done", "rows_done", "copied") if k in kwargs), 0)
    total = args[2] if len(args) > 2 else next(
        (kwargs[k] for k in ("total", "rows_total", "estimated") if k in kwargs), None)
    return table, float(done or 0), None if total is None else float(total)


def snapshot_progress(context: dg.OpExecutionContext, source: str) -> Callable[..., None]:
    """A snapshot progress callback: to :func:`tidemark.progress.report` and, every few
    seconds, to the run's log."""
    last = [0.0]

    def on_progress(*args: Any, **kwargs: Any) -> None:
        table, done, total = progress_fields(args, kwargs)
        progress.report("landing", done, total, "rows", f"{source}.{table}" if table else source)
        if time.monotonic() - last[0] >= LOG_EVERY_S:
            last[0] = time.monotonic()
            context.log.info(f"snapshot of {source}: {done:,.0f}"
                             + (f" of {total:,.0f}" if total else "") + f" rows ({table})")
    return on_progress


class CatchUpConfig(dg.Config):
    """Which source to catch up (empty: every source with contracts), and how long it may take
    (the first catch-up includes the initial snapshot of the whole source)."""

    source: str = ""
    timeout_s: float = 4 * 3600.0


@dg.op(description="Bring landing up to the source's current WAL position (ingestion.catch_up).")
def catch_up_source(context: dg.OpExecutionContext, config: CatchUpConfig,
                    tidemark: TidemarkResource) -> None:
    """Snapshot if needed, stream until caught up, record the tables' new LSNs."""
    import ingestion
    from contracts import load_contracts

    urls = tidemark.urls()
    contracts = load_contracts()
    accepts_progress = "on_progress" in inspect.signature(ingestion.catch_up).parameters
    for source in _sources(config.source):
        extra = {"on_progress": snapshot_progress(context, source)} if accepts_progress else {}
        stats = ingestion.catch_up(urls.source_ingest, urls.landing_app, source,
                                   contracts=contracts, setup_dsn=urls.source,
                                   timeout_s=config.timeout_s, **extra)
        progress.report("landing", stats.snapshot_rows + stats.changes, None, "rows", source)
        context.log.info(f"{source}: caught up to {stats.lsn}: {stats.snapshot_rows:,} snapshot "
                         f"rows, {stats.changes:,} changes in {stats.seconds} s")
    for obs in _observations(tidemark):
        context.log_event(obs)


class ResyncConfig(dg.Config):
    """Which table to rebuild from a fresh snapshot (``all_tables`` re-snapshots everything)."""

    source: str = ""
    table: str = ""
    all_tables: bool = False


@dg.op(description="Rebuild a table (or everything) from a fresh snapshot (ingestion.resync).")
def resync_table(context: dg.OpExecutionContext, config: ResyncConfig,
                 tidemark: TidemarkResource) -> None:
    """Resync one table or all; refuse an empty request."""
    import ingestion
    from contracts import load_contracts

    if not config.table and not config.all_tables:
        raise dg.Failure("Set `table` (e.g. orders) or `all_tables: true` in the run config.")
    sources = _sources(config.source)
    if len(sources) > 1:
        raise dg.Failure(f"Several sources have contracts ({', '.join(sources)}): set `source`.")
    urls = tidemark.urls()
    message = ingestion.resync(urls.source_ingest, urls.landing_app, sources[0],
                               None if config.all_tables else config.table,
                               contracts=load_contracts(), setup_dsn=urls.source)
    context.log.info(message)
    for obs in _observations(tidemark):
        context.log_event(obs)


class ReplayConfig(dg.Config):
    """Which dead letters to replay: ``ids`` (empty: all), optionally of one ``table``."""

    source: str = ""
    ids: list[int] = []
    table: str = ""


@dg.op(description="Re-validate dead letters against the current contracts and apply them.")
def replay_dead_letters(context: dg.OpExecutionContext, config: ReplayConfig,
                        tidemark: TidemarkResource) -> dict:
    """Replay dead letters (ingestion.replay) and log the outcome counts."""
    import ingestion
    from contracts import load_contracts

    outcome: dict[str, Any] = {}
    for source in _sources(config.source):
        outcome[source] = ingestion.replay(tidemark.urls().landing_app, source,
                                           contracts=load_contracts(), ids=config.ids or None,
                                           table=config.table or None)
        context.log.info(f"dead letter replay of {source}: {outcome[source]}")
    return outcome


@dg.job(name="ingestion_catch_up", description="One-shot catch-up of the sources into landing.")
def catch_up_job() -> None:
    """Run :func:`catch_up_source`."""
    catch_up_source()


@dg.job(name="ingestion_resync", description="Rebuild a paused table from a fresh snapshot.")
def resync_job() -> None:
    """Run :func:`resync_table`."""
    resync_table()


@dg.job(name="dead_letter_replay", description="Replay dead letters that now pass.")
def replay_job() -> None:
    """Run :func:`replay_dead_letters`."""
    replay_dead_letters()
