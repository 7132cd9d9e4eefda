"""``nightly_batch_schedule``: yesterday plus the correction window (``TIDEMARK_CORRECTION_DAYS``,
default 3) at ``TIDEMARK_BATCH_CRON`` (default ``30 2 * * *`` UTC)."""


import os
from datetime import datetime

import dagster as dg

from orchestration.defs.dbt.jobs import nightly_batch_job
from orchestration.defs.dbt.partitions import batch_window, range_tags


@dg.schedule(job=nightly_batch_job, name="nightly_batch_schedule",
             cron_schedule=os.environ.get("TIDEMARK_BATCH_CRON", "30 2 * * *"),
             execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Yesterday plus the correction window, one dbt run.")
def nightly_batch_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Request the nightly batch over yesterday and the days before it."""
    now = context.scheduled_execution_time or datetime.now()
    first, last = batch_window(now.date())
    return dg.RunRequest(run_key=f"nightly-{last}", tags=range_tags(first, last))
