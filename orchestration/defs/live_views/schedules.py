"""``verify_live_views_schedule`` (running by default): the live view checks at
``TIDEMARK_CHECKS_CRON`` (default every 15 minutes, UTC)."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.live_views.jobs import verify_live_views_job
from tidemark.settings import load_settings

verify_live_views_schedule = dg.ScheduleDefinition(
    name="verify_live_views_schedule", job=verify_live_views_job,
    cron_schedule=load_settings().checks_cron, execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Checks every live view against its query (or Materialize's hydration and lag).")
