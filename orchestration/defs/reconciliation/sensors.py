"""Reconciliation sensors: ``reconciliation_corrections`` re-runs the mart for just the drifted
days (one run per run of consecutive days, a single dbt invocation each);
``reconcile_after_batch`` runs the reconciliation job after every successful run that built a
daily mart without its reconciliation checks (a run of the marts with their checks, as the
``daily_marts`` job and the UI's Materialize do, reconciles in the same run)."""


from datetime import UTC, datetime

import dagster as dg
import psycopg

from orchestration.defs.dbt.assets import dbt_daily_marts
from orchestration.defs.dbt.jobs import daily_marts_job
from orchestration.defs.dbt.partitions import partitions_start, range_tags
from orchestration.defs.keys import mart_key
from orchestration.defs.reconciliation.checks import reconciliation
from orchestration.defs.reconciliation.jobs import reconciliation_job
from orchestration.defs.resources import TidemarkResource, unreachable
from tidemark.reconciliation.days import contiguous_ranges, mark_requested, pending_corrections


def correction_requests(tidemark: TidemarkResource, earliest: str | None = None
                        ) -> list[dg.RunRequest]:
    """Run requests re-running the drifted marts for just the drifted days.

    Each run of consecutive days of a mart is one run (a single dbt invocation over the range);
    the days are marked as requested so they are not requested twice.
    """
    landing = tidemark.urls().landing_app
    requests = []
    for mart, days in pending_corrections(landing).items():
        kept = [d for d in days if earliest is None or d.isoformat() >= earliest]
        for first, last in contiguous_ranges(kept):
            requests.append(dg.RunRequest(
                run_key=f"correct-{mart}-{first}-{last}-{datetime.now(UTC):%Y%m%dT%H%M%S}",
                job_name=daily_marts_job.name, asset_selection=[mart_key(mart)],
                tags={**range_tags(first.isoformat(), last.isoformat()),
                      "tidemark/correction": mart}))
        if days:
            mark_requested(landing, mart, days)
    return requests


@dg.sensor(name="reconciliation_corrections", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING, jobs=[daily_marts_job],
           description="Re-runs the marts for just the days reconciliation found drifting.")
def reconciliation_corrections(context: dg.SensorEvaluationContext,
                               tidemark: TidemarkResource):
    """Launch a correction run per range of drifted days."""
    try:
        requests = correction_requests(tidemark, earliest=partitions_start())
    except psycopg.OperationalError as exc:
        return dg.SkipReason(unreachable(exc))
    if not requests:
        return dg.SkipReason("No drifted days waiting for a correction.")
    return dg.SensorResult(run_requests=requests)


def needs_reconciliation(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a run built a daily mart without evaluating every reconciliation check (a run
    that selected the marts' checks reconciled already)."""
    events = instance.get_records_for_run(run_id, of_type={
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION}).records
    built, checked = set(), set()
    for record in events:
        event = record.event_log_entry.dagster_event
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            built.add(event.asset_key)
        else:
            data = event.event_specific_data
            checked.add(dg.AssetCheckKey(data.asset_key, data.check_name))
    return bool(built & set(dbt_daily_marts.keys)) and not reconciliation.check_keys <= checked


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="reconcile_after_batch",
                      request_job=reconciliation_job,
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Reconciles live against truth after every successful run "
                                  "that built a daily mart (schedules, backfills, the UI).")
def reconcile_after_batch(context: dg.RunStatusSensorContext):
    """Request the reconciliation job once per successful run that built a daily mart."""
    run = context.dagster_run
    if run.job_name == reconciliation_job.name or not needs_reconciliation(context.instance,
                                                                            run.run_id):
        return dg.SkipReason(f"run {run.run_id[:8]} built no daily mart or reconciled already")
    return dg.RunRequest(run_key=f"after-{run.run_id}")
