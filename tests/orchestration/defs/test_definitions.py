"""The code location loads, with the expected assets, lineage, jobs, schedules and sensors."""

from __future__ import annotations

import dagster as dg


def test_definitions_load_and_connect_the_layers(orch) -> None:
    dg.Definitions.validate_loadable(orch.defs)
    graph = orch.defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"shop/orders", "shop/payments", "live/daily_store_revenue",
            "staging/stg_shop__orders", "marts/fct_daily_store_revenue",
            "serving/daily_store_revenue"} <= keys

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key))
                .parent_keys}

    assert parents("staging/stg_shop__orders") == {"shop/orders"}
    assert parents("live/daily_store_revenue") == {"shop/orders", "shop/payments"}
    assert "marts/fct_daily_store_revenue" in parents("serving/daily_store_revenue")
    daily = graph.get(dg.AssetKey.from_user_string("marts/fct_daily_store_revenue"))
    assert isinstance(daily.partitions_def, dg.DailyPartitionsDefinition)
    assert daily.backfill_policy == dg.BackfillPolicy.single_run()
    assert graph.get(dg.AssetKey.from_user_string("staging/stg_shop__orders")).partitions_def \
        is None


def test_schedules_and_sensors_run_by_default(orch) -> None:
    schedule = orch.defs.resolve_schedule_def("nightly_batch_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    for name in ("ingestion_observer", "dead_letter_alert", "reconciliation_corrections",
                 "reconcile_after_batch", "mart_freshness_sensor"):
        assert orch.defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    for job in ("nightly_batch", "daily_marts", "reconciliation", "ingestion_catch_up",
                "ingestion_resync", "dead_letter_replay"):
        assert orch.defs.resolve_job_def(job) is not None


def test_dbt_tests_and_checks_are_asset_checks(orch) -> None:
    graph = orch.defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    names = {name for _, name in checks}
    assert ("marts/fct_daily_store_revenue", "reconcile_daily_store_revenue") in checks
    assert ("shop/orders", "ingestion_lag") in checks
    assert ("shop/orders", "dbt_source_freshness") in checks
    assert ("live/daily_store_revenue", "matches_query") in checks
    assert ("marts/fct_daily_store_revenue", "freshness_check") in checks
    assert any(n.startswith("not_null_") for n in names)  # dbt tests
