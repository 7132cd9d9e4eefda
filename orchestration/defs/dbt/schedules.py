"""dbt schedules (running by default).

* ``nightly_batch_schedule``: yesterday plus the correction window (``TIDEMARK_CORRECTION_DAYS``,
  default 3) at ``TIDEMARK_BATCH_CRON`` (default ``30 2 * * *`` UTC).
* ``source_freshness_schedule``: ``dbt source freshness`` at ``TIDEMARK_CHECKS_CRON`` (default
  every 15 minutes).
* ``full_history_tests_schedule``: the dbt tests tagged ``full_history`` at
  ``TIDEMARK_FULL_HISTORY_CRON`` (default ``30 4 * * *`` UTC).
"""

from datetime import UTC, datetime

import dagster as dg

from orchestration.defs.dbt.assets import FULL_HISTORY
from orchestration.defs.dbt.full_history import full_history_defs
from orchestration.defs.dbt.jobs import nightly_batch_job, source_freshness_job
from orchestration.defs.dbt.partitions import batch_window, range_tags
from tidemark.settings import load_settings


@dg.schedule(job=nightly_batch_job, name="nightly_batch_schedule",
             cron_schedule=load_settings().batch_cron, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Yesterday plus the correction window, one dbt run.")
def nightly_batch_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Request the nightly batch over yesterday and the days before it."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    first, last = batch_window(now.astimezone(UTC).date())
    return dg.RunRequest(run_key=f"nightly-{last}", tags=range_tags(first, last))


source_freshness_schedule = dg.ScheduleDefinition(
    name="source_freshness_schedule", job=source_freshness_job,
    cron_schedule=load_settings().checks_cron, execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="dbt source freshness of the replicated tables (contract warn/error ages).")

#: ``full_history_tests`` and its daily schedule (none when no dbt test is tagged full_history).
FULL_HISTORY_JOBS, FULL_HISTORY_SCHEDULES = full_history_defs(
    FULL_HISTORY, load_settings().full_history_cron)
