"""Mart freshness: the policy on every daily mart, and the per-partition check that fails
(with the overdue partition in its metadata) when yesterday's partition is missing."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.dbt.freshness import deadline_cron, mart_freshness_policy
from tests.orchestration.defs.conftest import check_results

MART = dg.AssetKey(["marts", "fct_daily_store_revenue"])


def test_policy_on_daily_marts_only(orch, monkeypatch) -> None:
    graph = orch.defs.resolve_asset_graph()
    assert graph.get(MART).freshness_policy == mart_freshness_policy()
    assert graph.get(dg.AssetKey(["marts", "dim_stores"])).freshness_policy is None
    assert deadline_cron() == "0 9 * * *"
    monkeypatch.setenv("TIDEMARK_MART_DEADLINE_CRON", "30 7 * * *")
    assert deadline_cron() == "30 7 * * *"


def test_partition_freshness_check_fails_without_and_passes_with_yesterday(built) -> None:
    key = dg.AssetCheckKey(MART, "freshness_check")
    job = built.defs.get_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={key})
    with dg.instance_for_test() as empty:
        stale = check_results(job.execute_in_process(instance=empty))[
            ("marts/fct_daily_store_revenue", "freshness_check")]
    assert not stale.passed
    assert stale.severity == dg.AssetCheckSeverity.ERROR
    assert "expect partition" in stale.description  # the reason, shown in the UI
    assert stale.metadata["dagster/freshness_params"].value["deadline_cron"] == deadline_cron()
    fresh = check_results(job.execute_in_process(instance=built.instance))[
        ("marts/fct_daily_store_revenue", "freshness_check")]
    assert fresh.passed, fresh.description
