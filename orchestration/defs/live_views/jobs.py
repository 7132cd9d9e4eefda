"""``verify_live_views``: the check of every live view, on its own (no redeploy)."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.keys import CHECK_RUN_TAGS
from orchestration.defs.live_views.checks import freshness_checks, live_view_checks
from tidemark.settings import load_settings

_CHECKS = [live_view_checks] + ([freshness_checks] if load_settings().live_target == "embedded"
                                else [])

verify_live_views_job = dg.define_asset_job(
    "verify_live_views", tags=CHECK_RUN_TAGS, selection=dg.AssetSelection.checks(*_CHECKS),
    description="Evaluate every live view's checks: on the embedded engine the view equals its "
                "query and keeps its freshness objective; on Materialize it is hydrated and "
                "current.")
