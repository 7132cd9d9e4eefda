"""Reconciliation sensors: ``reconciliation_corrections`` re-runs the mart for just the drifted
days (one run per run of consecutive days, a single dbt invocation each);
``reconcile_after_batch`` runs the reconciliation job after every successful batch."""


from datetime import UTC, datetime

import dagster as dg

from orchestration.defs.dbt.jobs import daily_marts_job, nightly_batch_job
from orchestration.defs.dbt.partitions import range_tags
from orchestration.defs.keys import mart_key
from orchestration.defs.reconciliation.jobs import reconciliation_job
from orchestration.defs.resources import TidemarkResource
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
    from orchestration.defs.dbt.partitions import partitions_start

    requests = correction_requests(tidemark, earliest=partitions_start())
    if not requests:
        return dg.SkipReason("No drifted days waiting for a correction.")
    return dg.SensorResult(run_requests=requests)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="reconcile_after_batch",
                      monitored_jobs=[nightly_batch_job, daily_marts_job],
                      request_job=reconciliation_job,
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Reconciles live against truth after every successful batch.")
def reconcile_after_batch(context: dg.RunStatusSensorContext):
    """Request the reconciliation job once per successful batch run."""
    return dg.RunRequest(run_key=f"after-{context.dagster_run.run_id}")
