"""Live views in Dagster: one asset per view file, its checks, the checks' job and schedule, and
the freshness observer (embedded engine: Materialize's lag is its ``hydrated_and_current``)."""

import dagster as dg

from orchestration.defs.live_views.assets import live_views
from orchestration.defs.live_views.checks import freshness_checks, live_view_checks
from orchestration.defs.live_views.jobs import verify_live_views_job
from orchestration.defs.live_views.schedules import verify_live_views_schedule
from orchestration.defs.live_views.sensors import freshness_observer
from tidemark.settings import load_settings

_EMBEDDED = load_settings().live_target == "embedded"

defs = dg.Definitions(assets=[live_views],
                      asset_checks=[live_view_checks, *([freshness_checks] if _EMBEDDED else [])],
                      jobs=[verify_live_views_job], schedules=[verify_live_views_schedule],
                      sensors=[freshness_observer] if _EMBEDDED else [])
