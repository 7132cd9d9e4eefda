"""The daily truth in Dagster: dbt assets, the nightly batch job and its schedule.

* ``tag:unpartitioned`` models (staging, intermediate, dims) are one ``@dbt_assets``;
  ``tag:daily`` marts another, on a :class:`~dagster.DailyPartitionsDefinition` with a
  single-run backfill policy: a backfill of N days is ONE ``dbt build --vars
  {min_date, max_date}`` over the run's partition window.
* dbt sources ``shop.<table>`` map to the ingestion assets ``shop/<table>``; models are keyed
  ``<schema>/<model>`` (``staging/stg_shop__orders``, ``marts/fct_daily_store_revenue``).
* dbt tests are asset checks (dagster-dbt's default).
* ``nightly_batch`` runs yesterday plus the correction window (``TIDEMARK_CORRECTION_DAYS``,
  default 3) at ``TIDEMARK_BATCH_CRON`` (default ``30 2 * * *`` UTC).
"""


import json
import os
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from orchestration.defs.dbt_setup import (
    clean_invocations,
    invocation_dir,
    require_manifest,
    tidemark_dbt_project,
)
from orchestration.defs.errors import DefinitionsError
from orchestration.defs.freshness import mart_freshness_policy
from orchestration.defs.resources import TidemarkResource
from tidemark.stack.dbt import environment

SOURCES = ("shop",)
DAILY_TAG = "daily"
PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"


def partitions_start() -> str:
    """First day of the daily partitions: ``TIDEMARK_PARTITIONS_START`` (default 2026-01-01)."""
    raw = os.environ.get("TIDEMARK_PARTITIONS_START", "").strip() or "2026-01-01"
    try:
        date.fromisoformat(raw)
    except ValueError:
        raise DefinitionsError(f"TIDEMARK_PARTITIONS_START must be a date like 2026-01-01; "
                               f"got {raw!r}.") from None
    return raw


def correction_days() -> int:
    """Days before yesterday the nightly batch re-runs (``TIDEMARK_CORRECTION_DAYS``, 3)."""
    raw = os.environ.get("TIDEMARK_CORRECTION_DAYS", "").strip() or "3"
    if not raw.isdigit():
        raise DefinitionsError(f"TIDEMARK_CORRECTION_DAYS must be a whole number; got {raw!r}.")
    return int(raw)


DAILY = dg.DailyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")


class TidemarkTranslator(DagsterDbtTranslator):
    """Keys ``<schema>/<model>``, sources onto the ingestion assets, freshness on daily marts."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        """``shop/<table>`` for sources of the replicated source, else ``<schema>/<name>``."""
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """Groups by layer: staging, intermediate, marts."""
        if dbt_resource_props["resource_type"] == "source":
            return "ingestion"
        return dbt_resource_props.get("schema")

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str,
                       project: Any) -> dg.AssetSpec:
        """dagster-dbt's spec plus the mart freshness policy on daily models."""
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "model" and DAILY_TAG in props.get("tags", []):
            spec = spec.replace_attributes(freshness_policy=mart_freshness_policy())
        return spec


PROJECT = tidemark_dbt_project()
MANIFEST = require_manifest(PROJECT)
TRANSLATOR = TidemarkTranslator()


def day_vars(window: dg.TimeWindow) -> dict[str, str]:
    """dbt vars ``min_date``/``max_date`` (inclusive ISO days) of a partition time window."""
    last = window.end - timedelta(days=1)
    return {"min_date": window.start.date().isoformat(), "max_date": last.date().isoformat()}


def run_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource, tidemark: TidemarkResource,
            args: list[str], extra_metadata: dict[str, Any] | None = None) -> Iterator[Any]:
    """Run one dbt command for the selected assets and stream its events to Dagster.

    The profile is pointed at the resource's landing URL for the invocation; the invocation's
    directory goes under ``<target>/runs`` and old ones are cleaned afterwards. Tests run with
    ``buildable`` indirect selection: a test that also reads a model of the other ``@dbt_assets``
    (e.g. a mart's relationship to a dimension) runs only with the step that builds all its
    parents, never before they exist. Dagster overrides it when it subsets the checks.
    """
    target = invocation_dir(context.op_execution_context.op.name, context.run.run_id)
    with tidemark.dbt_environment(), environment({"DBT_INDIRECT_SELECTION": "buildable"}):
        invocation = dbt.cli(args, context=context, target_path=target)
        for event in invocation.stream():
            if extra_metadata and isinstance(event, dg.Output):
                event = event.with_metadata({**event.metadata, **extra_metadata})
            yield event
    clean_invocations()


@dbt_assets(manifest=MANIFEST, project=PROJECT, select="tag:unpartitioned",
            dagster_dbt_translator=TRANSLATOR, name="dbt_unpartitioned")
def dbt_unpartitioned(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                      tidemark: TidemarkResource):
    """Staging and intermediate views and the dimension tables (``dbt build``)."""
    yield from run_dbt(context, dbt, tidemark, ["build"])


@dbt_assets(manifest=MANIFEST, project=PROJECT, select=f"tag:{DAILY_TAG}",
            dagster_dbt_translator=TRANSLATOR, name="dbt_daily_marts", partitions_def=DAILY,
            backfill_policy=dg.BackfillPolicy.single_run())
def dbt_daily_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                    tidemark: TidemarkResource):
    """Daily marts for the run's days: one ``dbt build`` with vars min_date/max_date."""
    dbt_vars = day_vars(context.partition_time_window)
    context.log.info(f"dbt build of the daily marts for {dbt_vars}")
    # Unit tests bring their own fixture days and would see the partition's vars: they run in
    # dbt's own CI (tests/dbt_project), not in a partition build.
    yield from run_dbt(context, dbt, tidemark, ["build", "--vars", json.dumps(dbt_vars),
                                                "--exclude", "test_type:unit"],
                       {"dbt_vars": dbt_vars})


def daily_mart_keys() -> list[dg.AssetKey]:
    """Keys of the daily marts."""
    return sorted(dbt_daily_marts.keys, key=lambda k: k.to_user_string())


nightly_batch_job = dg.define_asset_job(
    "nightly_batch", selection=dg.AssetSelection.assets(dbt_unpartitioned, dbt_daily_marts),
    description="dbt: staging, dimensions and the daily marts for a range of days (one run).")

daily_marts_job = dg.define_asset_job(
    "daily_marts", selection=dg.AssetSelection.assets(dbt_daily_marts),
    description="dbt: the daily marts only, for a range of days (corrections).")


def batch_window(today: date, days_back: int | None = None) -> tuple[str, str]:
    """(first, last) partition keys of the nightly batch: yesterday and the correction window."""
    days_back = correction_days() if days_back is None else days_back
    start = date.fromisoformat(partitions_start())
    last = today - timedelta(days=1)
    first = max(start, last - timedelta(days=days_back))
    return first.isoformat(), last.isoformat()


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover partitions ``first`` .. ``last``."""
    return {PARTITION_RANGE_START: first, PARTITION_RANGE_END: last}


@dg.schedule(job=nightly_batch_job, name="nightly_batch_schedule",
             cron_schedule=os.environ.get("TIDEMARK_BATCH_CRON", "30 2 * * *"),
             execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Yesterday plus the correction window, one dbt run.")
def nightly_batch_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Request the nightly batch over yesterday and the days before it."""
    now = context.scheduled_execution_time or datetime.now()
    first, last = batch_window(now.date())
    return dg.RunRequest(run_key=f"nightly-{last}", tags=range_tags(first, last))


defs = dg.Definitions(
    assets=[dbt_unpartitioned, dbt_daily_marts],
    jobs=[nightly_batch_job, daily_marts_job],
    schedules=[nightly_batch_schedule],
)
