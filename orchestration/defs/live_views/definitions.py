"""Live views in Dagster: one asset per view file and its check."""

import dagster as dg

from orchestration.defs.live_views.assets import live_views
from orchestration.defs.live_views.checks import live_view_checks

defs = dg.Definitions(assets=[live_views], asset_checks=[live_view_checks])
