"""Ingestion in Dagster: observed tables, their checks, sensors and jobs."""

import dagster as dg

from orchestration.defs.ingestion.assets import ingestion_tables
from orchestration.defs.ingestion.checks import ingestion_checks
from orchestration.defs.ingestion.jobs import catch_up_job, replay_job, resync_job
from orchestration.defs.ingestion.sensors import dead_letter_alert, ingestion_observer

defs = dg.Definitions(
    assets=[ingestion_tables],
    asset_checks=[ingestion_checks],
    jobs=[catch_up_job, resync_job, replay_job],
    sensors=[ingestion_observer, dead_letter_alert],
)
