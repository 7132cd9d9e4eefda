"""dbt jobs: ``nightly_batch`` (everything for a range of days) and ``daily_marts``."""

import dagster as dg

from orchestration.defs.dbt.assets import dbt_daily_marts, dbt_unpartitioned

nightly_batch_job = dg.define_asset_job(
    "nightly_batch", selection=dg.AssetSelection.assets(dbt_unpartitioned, dbt_daily_marts),
    description="dbt: staging, dimensions and the daily marts for a range of days (one run).")


daily_marts_job = dg.define_asset_job(
    "daily_marts", selection=dg.AssetSelection.assets(dbt_daily_marts),
    description="dbt: the daily marts only, for a range of days (corrections).")
