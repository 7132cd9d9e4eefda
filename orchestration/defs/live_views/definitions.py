"""Live views in Dagster: one asset per view file, its check, and the check's job and schedule."""

import dagster as dg

from orchestration.defs.live_views.assets import live_views
from orchestration.defs.live_views.checks import live_view_checks
from orchestration.defs.live_views.jobs import verify_live_views_job
from orchestration.defs.live_views.schedules import verify_live_views_schedule

defs = dg.Definitions(assets=[live_views], asset_checks=[live_view_checks],
                      jobs=[verify_live_views_job], schedules=[verify_live_views_schedule])
