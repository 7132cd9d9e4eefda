"""dbt in Dagster: the model assets, their checks, jobs, schedules and freshness sensor."""

import dagster as dg

from orchestration.defs.dbt.assets import dbt_daily_marts, dbt_unpartitioned
from orchestration.defs.dbt.checks import dbt_source_freshness
from orchestration.defs.dbt.freshness import partition_freshness_defs
from orchestration.defs.dbt.jobs import daily_marts_job, nightly_batch_job
from orchestration.defs.dbt.schedules import nightly_batch_schedule

defs = dg.Definitions.merge(
    dg.Definitions(
        assets=[dbt_unpartitioned, dbt_daily_marts],
        asset_checks=[dbt_source_freshness],
        jobs=[nightly_batch_job, daily_marts_job],
        schedules=[nightly_batch_schedule],
    ),
    partition_freshness_defs([dbt_daily_marts]),
)
