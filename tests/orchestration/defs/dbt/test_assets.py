"""dbt assets: a backfill of three days is one run and one dbt invocation over the three days;
the nightly schedule asks for yesterday plus the correction window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

MART = dg.AssetKey(["marts", "fct_daily_store_revenue"])


@pytest.fixture(scope="module")
def batch(orch):
    """The batch module, imported once the manifest is prepared."""
    from types import SimpleNamespace

    from orchestration.defs.dbt.partitions import (
        PARTITION_RANGE_END,
        PARTITION_RANGE_START,
        batch_window,
        day_vars,
        range_tags,
    )
    from orchestration.defs.dbt.schedules import nightly_batch_schedule

    return SimpleNamespace(batch_window=batch_window, day_vars=day_vars, range_tags=range_tags,
                           nightly_batch_schedule=nightly_batch_schedule,
                           PARTITION_RANGE_START=PARTITION_RANGE_START,
                           PARTITION_RANGE_END=PARTITION_RANGE_END)


def test_day_vars_cover_the_window(batch) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    window = dg.TimeWindow(start, start + timedelta(days=3))
    assert batch.day_vars(window) == {"min_date": "2026-03-01", "max_date": "2026-03-03"}


def test_three_day_backfill_is_one_run(built, batch) -> None:
    days = built.built_days[-3:]
    first, last = days[0].isoformat(), days[-1].isoformat()
    before = len(built.instance.get_runs())
    result = built.job("daily_marts").execute_in_process(
        instance=built.instance, tags=batch.range_tags(first, last))
    assert result.success
    assert len(built.instance.get_runs()) == before + 1
    mats = [e.event_specific_data.materialization for e in
            result.get_asset_materialization_events()
            if e.asset_key == MART]
    assert sorted(m.partition for m in mats) == [d.isoformat() for d in days]
    assert {tuple(sorted(m.metadata["dbt_vars"].value.items())) for m in mats} == {
        (("max_date", last), ("min_date", first))}
    rows = built.sql("select count(distinct order_date) from marts.fct_daily_store_revenue "
                     "where order_date between %s and %s", (days[0], days[-1]))
    assert rows[0][0] == 3
    dbt_checks = [e for e in result.get_asset_check_evaluations() if e.asset_key == MART]
    assert dbt_checks and all(e.passed for e in dbt_checks)  # dbt tests as asset checks


def test_nightly_schedule_requests_yesterday_and_correction_window(batch, orch) -> None:
    today = datetime.now(UTC).date()
    when = datetime(today.year, today.month, today.day, 2, 30, tzinfo=UTC)
    request = batch.nightly_batch_schedule(dg.build_schedule_context(scheduled_execution_time=when))
    yesterday = today - timedelta(days=1)
    first = max(orch.days[0], yesterday - timedelta(days=3))  # never before the first partition
    assert request.tags[batch.PARTITION_RANGE_START] == first.isoformat()
    assert request.tags[batch.PARTITION_RANGE_END] == yesterday.isoformat()
    assert batch.batch_window(today, 0) == (yesterday.isoformat(), yesterday.isoformat())


def test_a_clones_source_not_registered_here_is_left_out_of_the_dbt_build(orch, tmp_path
                                                                         ) -> None:
    """A clone with ``_mydb__sources.yml`` (``tidemark contracts init mydb``) and models over
    it, on a stack where mydb is not registered (a colleague's fresh ``tidemark up``): the
    build failed on 32 source tests, "relation mydb.pgbench_accounts does not exist". Its
    sources, tests and models are excluded, with a warning naming it; registered ones are not."""
    import json

    from ingestion.sources import SourceSpec, delete_source, save_source
    from orchestration.defs.dbt.assets import manifest_sources, unregistered_excludes

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"sources": {
        f"source.tidemark.{s}.t": {"source_name": s} for s in ("shop", "shop_cdc", "mydb",
                                                               "mydb_cdc")}}))
    assert manifest_sources(manifest) == ["mydb", "shop"]
    context = dg.build_asset_context()
    assert unregistered_excludes(context, orch.resource, ["mydb", "shop"]) == [
        "source:mydb+", "source:mydb_cdc+"]
    save_source(orch.landing_url, SourceSpec("mydb", url=orch.source_url))
    try:
        assert unregistered_excludes(context, orch.resource, ["mydb", "shop"]) == []
    finally:
        delete_source(orch.landing_url, "mydb")
    assert unregistered_excludes(context, orch.resource) == []  # the repository: shop only
