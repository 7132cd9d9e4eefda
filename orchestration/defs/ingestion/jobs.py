"""Ingestion jobs: ``ingestion_catch_up`` (one-shot catch-up, without the long-running
process), ``ingestion_resync`` (one table or all from a fresh snapshot), ``dead_letter_replay``."""

import time
from pathlib import Path
from typing import Any

import dagster as dg

from ingestion.progress import ProgressCallback, SnapshotProgress
from orchestration.defs.ingestion.assets import states
from orchestration.defs.ingestion.state import ingestible_sources, source_urls
from orchestration.defs.resources import TidemarkResource
from tidemark import progress

LOG_EVERY_S = 5.0


def _observations(tidemark: TidemarkResource) -> list[dg.AssetObservation]:
    return [dg.AssetObservation(key, metadata=s.metadata()) for key, s in states(tidemark).items()]


def _sources(tidemark: TidemarkResource, only: str,
             log: dg.DagsterLogManager | None = None) -> list[str]:
    """The sources to work on: ``only``, else every registered source with contracts (and the
    demo source); contracts of a source not registered are reported in ``log``, not used."""
    from contracts import load_contracts

    contracts = load_contracts()
    sources, unregistered = ingestible_sources(tidemark, contracts.sources())
    if only and only in unregistered:
        raise dg.Failure(unregistered_message(contracts.root, only))
    if only and only not in sources:
        raise dg.Failure(f"No contracts for source {only!r}; known sources: "
                         f"{', '.join(sources) or 'none'} (contracts/<source>/).")
    if not only and log is not None:
        for name in unregistered:
            log.warning(unregistered_message(contracts.root, name))
    return [only] if only else sources


def unregistered_message(root: Path, source: str) -> str:
    """What to say about contracts of a source that is not registered."""
    return (f"{root / source} holds contracts of source {source!r}, which is not registered "
            f"(removed with tidemark source remove?): it is not ingested. Register it "
            f"(tidemark source add {source} ...) or remove that directory.")


def snapshot_progress(context: dg.OpExecutionContext, source: str) -> ProgressCallback:
    """A snapshot progress callback: to :func:`tidemark.progress.report` and, every few
    seconds, to the run's log."""
    last = [0.0]

    def on_progress(p: SnapshotProgress) -> None:
        tables = ", ".join(p.current) or f"{p.tables_done} of {p.tables_total} tables"
        progress.report("landing", p.rows, p.rows_estimate, "rows", f"{source}: {tables}")
        if time.monotonic() - last[0] >= LOG_EVERY_S or p.done:
            last[0] = time.monotonic()
            context.log.info(f"snapshot of {source}: {p.rows:,}"
                             + (f" of ~{p.rows_estimate:,}" if p.rows_estimate else "")
                             + f" rows, {p.tables_done} of {p.tables_total} tables")
    return on_progress


class CatchUpConfig(dg.Config):
    """Which source to catch up (empty: every registered source with contracts, and the demo
    source), and how long it may take
    (the first catch-up includes the initial snapshot of the whole source)."""

    source: str = ""
    timeout_s: float = 4 * 3600.0


@dg.op(description="Bring landing up to the source's current WAL position (ingestion.catch_up).")
def catch_up_source(context: dg.OpExecutionContext, config: CatchUpConfig,
                    tidemark: TidemarkResource) -> None:
    """Snapshot if needed, stream until caught up, record the tables' new LSNs."""
    import ingestion
    from contracts import load_contracts

    contracts = load_contracts()
    for source in _sources(tidemark, config.source, context.log):
        dsn, setup_dsn, schemas = source_urls(tidemark, source)
        stats = ingestion.catch_up(dsn, tidemark.urls().landing_app, source, contracts=contracts,
                                   setup_dsn=setup_dsn, schemas=schemas,
                                   timeout_s=config.timeout_s,
                                   on_progress=snapshot_progress(context, source))
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
    sources = _sources(tidemark, config.source)
    if len(sources) > 1:
        raise dg.Failure(f"Several sources have contracts ({', '.join(sources)}): set `source`.")
    dsn, setup_dsn, _ = source_urls(tidemark, sources[0])
    message = ingestion.resync(dsn, tidemark.urls().landing_app, sources[0],
                               None if config.all_tables else config.table,
                               contracts=load_contracts(), setup_dsn=setup_dsn)
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
    for source in _sources(tidemark, config.source, context.log):
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
