"""``verify_live_views``: the check of every live view, on its own (no redeploy)."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.live_views.checks import live_view_checks

verify_live_views_job = dg.define_asset_job(
    "verify_live_views", selection=dg.AssetSelection.checks(live_view_checks),
    description="Evaluate every live view's check: on the embedded engine the view equals its "
                "query; on Materialize it is hydrated and current.")
