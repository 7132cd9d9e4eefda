"""dbt in Dagster: the model assets, their checks, jobs, schedules and sensors (mart freshness,
closed days, the project's parse), built by :func:`dbt_definitions` with the daily partitions'
start as it is when the definitions are built."""

import dagster as dg

from orchestration.defs.dbt.assets import dbt_daily_marts, dbt_unpartitioned
from orchestration.defs.dbt.checks import dbt_source_freshness, mart_freshness
from orchestration.defs.dbt.closure import closed_days_sensor
from orchestration.defs.dbt.jobs import (
    PARSE_CHECK,
    PARSE_SENSOR,
    daily_marts_job,
    nightly_batch_job,
    source_freshness_job,
)
from orchestration.defs.dbt.partitions import with_current_start
from orchestration.defs.dbt.schedules import (
    FULL_HISTORY_JOBS,
    FULL_HISTORY_SCHEDULES,
    nightly_batch_schedule,
    source_freshness_schedule,
)
from orchestration.defs.dbt.sensors import mart_freshness_sensor_def


def dbt_definitions() -> dg.Definitions:
    """The dbt definitions; the daily marts' partitions start as
    :func:`~orchestration.defs.dbt.partitions.partitions_start` says now."""
    return dg.Definitions(
        assets=[dbt_unpartitioned, with_current_start(dbt_daily_marts)],
        asset_checks=[dbt_source_freshness, *mart_freshness, PARSE_CHECK],
        jobs=[nightly_batch_job, daily_marts_job, source_freshness_job, *FULL_HISTORY_JOBS],
        schedules=[nightly_batch_schedule, source_freshness_schedule, *FULL_HISTORY_SCHEDULES],
        sensors=[mart_freshness_sensor_def, closed_days_sensor, PARSE_SENSOR],
    )
