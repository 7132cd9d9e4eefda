"""dbt jobs: ``nightly_batch`` (everything for a range of days), ``daily_marts`` (the marts
only: backfills, corrections) and ``source_freshness`` (``dbt source freshness`` on its own).
Both build jobs leave out the ``full_history`` tests (``full_history_tests``, daily: see
:mod:`orchestration.defs.dbt.full_history`)."""

import dagster as dg

from orchestration.defs.dbt.assets import FULL_HISTORY, dbt_daily_marts, dbt_unpartitioned
from orchestration.defs.dbt.checks import dbt_source_freshness
from orchestration.defs.dbt.parse_check import parse_check_defs
from orchestration.defs.keys import CHECK_RUN_TAGS

#: ``dbt_project_parses`` on every dbt model and its sensor; the jobs leave the check out (a dbt
#: run fails on a parse error anyway; the sensor reports it).
PARSE_CHECK, PARSE_SENSOR = parse_check_defs([*dbt_unpartitioned.keys, *dbt_daily_marts.keys])

nightly_batch_job = dg.define_asset_job(
    "nightly_batch", selection=dg.AssetSelection.assets(dbt_unpartitioned, dbt_daily_marts)
    - dg.AssetSelection.checks(PARSE_CHECK, *FULL_HISTORY),
    description="dbt: staging, dimensions and the daily marts for a range of days (one run).")

daily_marts_job = dg.define_asset_job(
    "daily_marts", selection=dg.AssetSelection.assets(dbt_daily_marts)
    - dg.AssetSelection.checks(PARSE_CHECK, *FULL_HISTORY),
    description="dbt: the daily marts only, for a range of days (corrections).")

source_freshness_job = dg.define_asset_job(
    "source_freshness", tags=CHECK_RUN_TAGS,
    selection=dg.AssetSelection.checks(dbt_source_freshness),
    description="dbt source freshness of every replicated table with a loaded_at column.")
