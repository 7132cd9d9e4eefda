"""Ingestion jobs: ``ingestion_catch_up`` (one-shot catch-up, without the long-running
process), ``ingestion_resync`` (one table or all from a fresh snapshot), ``dead_letter_replay``."""


import dagster as dg

from orchestration.defs.ingestion.assets import states
from orchestration.defs.keys import table_key
from orchestration.defs.resources import TidemarkResource


def _observations(tidemark: TidemarkResource) -> list[dg.AssetObservation]:
    return [dg.AssetObservation(table_key(n), metadata=s.metadata(),
                                tags={"dagster/data_version": s.lsn or "none"})
            for n, s in states(tidemark).items()]


@dg.op(description="Bring landing up to the source's current WAL position (ingestion.catch_up).")
def catch_up_source(context: dg.OpExecutionContext, tidemark: TidemarkResource) -> None:
    """Snapshot if needed, stream until caught up, record the tables' new LSNs."""
    import ingestion
    from contracts import load_contracts

    urls = tidemark.urls()
    stats = ingestion.catch_up(urls.source_ingest, urls.landing_app, tidemark.source,
                               contracts=load_contracts(), setup_dsn=urls.source)
    context.log.info(f"caught up to {stats.lsn}: {stats.snapshot_rows} snapshot rows, "
                     f"{stats.changes} changes in {stats.seconds} s")
    for obs in _observations(tidemark):
        context.log_event(obs)


class ResyncConfig(dg.Config):
    """Which table to rebuild from a fresh snapshot (``all_tables`` re-snapshots everything)."""

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
    urls = tidemark.urls()
    message = ingestion.resync(urls.source_ingest, urls.landing_app, tidemark.source,
                               None if config.all_tables else config.table,
                               contracts=load_contracts(), setup_dsn=urls.source)
    context.log.info(message)
    for obs in _observations(tidemark):
        context.log_event(obs)


class ReplayConfig(dg.Config):
    """Which dead letters to replay: ``ids`` (empty: all), optionally of one ``table``."""

    ids: list[int] = []
    table: str = ""


@dg.op(description="Re-validate dead letters against the current contracts and apply them.")
def replay_dead_letters(context: dg.OpExecutionContext, config: ReplayConfig,
                        tidemark: TidemarkResource) -> dict:
    """Replay dead letters (ingestion.replay) and log the outcome counts."""
    import ingestion
    from contracts import load_contracts

    outcome = ingestion.replay(tidemark.urls().landing_app, tidemark.source,
                               contracts=load_contracts(), ids=config.ids or None,
                               table=config.table or None)
    context.log.info(f"dead letter replay: {outcome}")
    return outcome


@dg.job(name="ingestion_catch_up", description="One-shot catch-up of the source into landing.")
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
