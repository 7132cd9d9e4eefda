"""Ingestion in Dagster: one observable asset per replicated table, its checks and jobs.

* ``shop/<table>`` assets are observed: data version = the table's newest applied LSN; metadata
  lag (seconds, bytes), rows/s, dead letters, paused. The ``ingestion_observer`` sensor records
  an observation only when a table's LSN changed and a check evaluation only when its outcome
  changed, so a quiet stack writes nothing to the event log.
* checks per table: ``ingestion_lag`` (paused, or lag over the thresholds) and ``dead_letters``.
* jobs: ``ingestion_catch_up`` (one-shot catch-up, without the long-running process),
  ``ingestion_resync`` (one table or all from a fresh snapshot), ``dead_letter_replay``.
"""


import json
from typing import Any

import dagster as dg

from orchestration.defs.ingestion_state import TableSpec, TableState, read_states, table_specs
from orchestration.defs.resources import TidemarkResource

SOURCE = "shop"
GROUP = "ingestion"
LAG_CHECK = "ingestion_lag"
DEAD_LETTER_CHECK = "dead_letters"


def table_key(table: str, source: str = SOURCE) -> dg.AssetKey:
    """Asset key of a replicated table: ``<source>/<table>``."""
    return dg.AssetKey([source, table])


def _specs() -> list[dg.AssetSpec]:
    from datetime import timedelta

    out = []
    for t in table_specs(SOURCE):
        policy = None
        if t.loaded_at:
            policy = dg.FreshnessPolicy.time_window(
                fail_window=timedelta(seconds=t.error_after_s),
                warn_window=timedelta(seconds=min(t.warn_after_s, t.error_after_s - 1)))
        out.append(dg.AssetSpec(
            table_key(t.name), group_name=GROUP, kinds={"postgres"},
            description=(t.description or f"Replicated table {t.name}") +
            f" Landing mirror {SOURCE}.{t.name}, changelog cdc.{SOURCE}__{t.name}.",
            metadata={"loaded_at": t.loaded_at or "none"},
            freshness_policy=policy))
    return out


def _check_specs() -> list[dg.AssetCheckSpec]:
    out = []
    for t in table_specs(SOURCE):
        out.append(dg.AssetCheckSpec(LAG_CHECK, asset=table_key(t.name), description=(
            "Fails when the table is paused or ingestion lags more than the error threshold "
            "(the last transaction's lag, or source changes waiting to land).")))
        out.append(dg.AssetCheckSpec(DEAD_LETTER_CHECK, asset=table_key(t.name), description=(
            "Warns while the table has dead letters (contract violations) not yet replayed.")))
    return out


def states(tidemark: TidemarkResource, tables: list[str] | None = None) -> dict[str, TableState]:
    """Read the state of the given tables (default: all replicated ones)."""
    urls = tidemark.urls()
    specs: list[TableSpec] = [t for t in table_specs(SOURCE) if tables is None or t.name in tables]
    return read_states(urls.source, urls.landing, tidemark.source, specs)


def lag_evaluation(state: TableState, warn_s: float, error_s: float) -> dg.AssetCheckEvaluation:
    """The ``ingestion_lag`` outcome of one table, with the reason in the description."""
    meta = {**state.metadata(), "warn_after_s": warn_s, "error_after_s": error_s}
    key = table_key(state.table)
    if state.paused_reason:
        return dg.AssetCheckEvaluation(
            key, LAG_CHECK, passed=False, metadata=meta, severity=dg.AssetCheckSeverity.ERROR,
            description=f"{state.table} is paused: {state.paused_reason} Fix the cause, then "
                        f"run the ingestion_resync job (or `tidemark ingest resync "
                        f"{state.table}`).")
    lag = state.lag_s
    if lag > warn_s:
        severity = dg.AssetCheckSeverity.ERROR if lag > error_s else dg.AssetCheckSeverity.WARN
        limit = error_s if lag > error_s else warn_s
        return dg.AssetCheckEvaluation(
            key, LAG_CHECK, passed=False, metadata=meta, severity=severity,
            description=f"{state.table} lags {lag:.1f} s (over {limit:g} s): source changes "
                        f"have waited {float(state.pending_s or 0):.1f} s to land. Is "
                        f"`tidemark ingest run` (or the ingestion_catch_up job) running?")
    return dg.AssetCheckEvaluation(key, LAG_CHECK, passed=True, metadata=meta,
                                   description=f"{state.table} lags {lag:.1f} s.")


def dead_letter_evaluation(state: TableState, grew_by: int = 0) -> dg.AssetCheckEvaluation:
    """The ``dead_letters`` outcome of one table (WARN while unreplayed letters exist)."""
    meta = {"dead_letters": state.dead_letters, "new_since_last_check": grew_by}
    if state.dead_letters == 0:
        return dg.AssetCheckEvaluation(table_key(state.table), DEAD_LETTER_CHECK, passed=True,
                                       metadata=meta, description="No dead letters.")
    return dg.AssetCheckEvaluation(
        table_key(state.table), DEAD_LETTER_CHECK, passed=False, metadata=meta,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{state.dead_letters} dead letters in {state.table}"
                    + (f" ({grew_by} new)" if grew_by else "")
                    + "; inspect with `tidemark dlq list`, fix the contract or the source, then "
                      "run the dead_letter_replay job.")


def _as_result(evaluation: dg.AssetCheckEvaluation) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=evaluation.asset_key,
                               check_name=evaluation.check_name, passed=evaluation.passed,
                               severity=evaluation.severity, description=evaluation.description,
                               metadata=evaluation.metadata)


@dg.multi_observable_source_asset(specs=_specs(), name="ingestion_tables",
                                  can_subset=True)
def ingestion_tables(context: dg.AssetExecutionContext, tidemark: TidemarkResource):
    """Observe the replicated tables: data version = newest applied LSN."""
    names = [k.path[-1] for k in context.selected_asset_keys]
    for name, state in states(tidemark, names).items():
        yield dg.ObserveResult(asset_key=table_key(name), metadata=state.metadata(),
                               data_version=dg.DataVersion(state.lsn or "none"))


@dg.multi_asset_check(specs=_check_specs(), can_subset=True, name="ingestion_checks")
def ingestion_checks(context: dg.AssetCheckExecutionContext, tidemark: TidemarkResource):
    """Lag and dead-letter checks of every replicated table."""
    warn_s, error_s = tidemark.lag_thresholds()
    selected = context.selected_asset_check_keys
    for name, state in states(tidemark).items():
        if dg.AssetCheckKey(table_key(name), LAG_CHECK) in selected:
            yield _as_result(lag_evaluation(state, warn_s, error_s))
        if dg.AssetCheckKey(table_key(name), DEAD_LETTER_CHECK) in selected:
            yield _as_result(dead_letter_evaluation(state))


def observe_changes(tidemark: TidemarkResource, cursor: str | None) -> tuple[list, str]:
    """What the observer sensor records: events for tables whose LSN or lag outcome changed.

    Args:
        tidemark: the resource.
        cursor: the previous cursor (JSON: table -> [lsn, lag outcome]).

    Returns:
        (asset events, new cursor).
    """
    before: dict[str, list] = json.loads(cursor) if cursor else {}
    warn_s, error_s = tidemark.lag_thresholds()
    events: list[Any] = []
    after: dict[str, list] = {}
    for name, state in states(tidemark).items():
        lsn = state.lsn or "none"
        evaluation = lag_evaluation(state, warn_s, error_s)
        outcome = "pass" if evaluation.passed else evaluation.severity.value
        old = before.get(name, [None, None])
        if lsn != old[0]:
            events.append(dg.AssetObservation(table_key(name), metadata=state.metadata(),
                                              tags={"dagster/data_version": lsn}))
        if outcome != old[1]:
            events.append(evaluation)
        after[name] = [lsn, outcome]
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="ingestion_observer", minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Records an observation of each replicated table when its applied LSN "
                       "moved, and the lag check's outcome when it changed.")
def ingestion_observer(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Observe ingestion without flooding the event log (only changes are recorded)."""
    events, cursor = observe_changes(tidemark, context.cursor)
    if not events:
        return dg.SkipReason("No table moved and no lag outcome changed.")
    return dg.SensorResult(asset_events=events, cursor=cursor)


def dead_letter_growth(tidemark: TidemarkResource, cursor: str | None) -> tuple[list, str]:
    """Check evaluations for tables whose dead-letter count changed since ``cursor``."""
    before: dict[str, int] = json.loads(cursor) if cursor else {}
    events = []
    after = {}
    for name, state in states(tidemark).items():
        after[name] = state.dead_letters
        if state.dead_letters != before.get(name, 0):
            events.append(dead_letter_evaluation(
                state, max(0, state.dead_letters - before.get(name, 0))))
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="dead_letter_alert", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Alerts (a WARN check on the table) when dead letters grow.")
def dead_letter_alert(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Raise the ``dead_letters`` check of a table when its dead letters grow."""
    events, cursor = dead_letter_growth(tidemark, context.cursor)
    for event in events:
        if not event.passed:
            context.log.warning(event.description)
    if not events:
        return dg.SkipReason("Dead letters unchanged.")
    return dg.SensorResult(asset_events=events, cursor=cursor)


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


defs = dg.Definitions(
    assets=[ingestion_tables],
    asset_checks=[ingestion_checks],
    jobs=[catch_up_job, resync_job, replay_job],
    sensors=[ingestion_observer, dead_letter_alert],
)
