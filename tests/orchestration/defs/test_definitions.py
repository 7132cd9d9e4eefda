"""The code location loads, with the expected assets, lineage, jobs, schedules and sensors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
    for name in ("verify_live_views_schedule", "source_freshness_schedule"):
        checks = orch.defs.resolve_schedule_def(name)
        assert checks.default_status == dg.DefaultScheduleStatus.RUNNING
        assert checks.cron_schedule == "*/15 * * * *"
    for name in ("ingestion_observer", "dead_letter_alert", "reconciliation_corrections",
                 "reconcile_after_batch", "mart_freshness_sensor"):
        assert orch.defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    for job in ("nightly_batch", "daily_marts", "reconciliation", "ingestion_catch_up",
                "ingestion_resync", "dead_letter_replay", "verify_live_views",
                "source_freshness"):
        assert orch.defs.resolve_job_def(job) is not None


def test_check_runs_start_before_queued_mart_runs(orch) -> None:
    # With 2 runs at a time, the demo's corrections queued verify_live_views behind them for
    # 12 minutes (d25): a check run has the higher queue priority.
    def priority(job: str) -> int:
        return int(orch.defs.resolve_job_def(job).tags.get("dagster/priority", 0))

    for checks in ("verify_live_views", "source_freshness", "reconciliation"):
        for marts in ("daily_marts", "nightly_batch"):
            assert priority(checks) > priority(marts), (checks, marts)


def test_dbt_tests_and_checks_are_asset_checks(orch) -> None:
    graph = orch.defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    names = {name for _, name in checks}
    assert ("marts/fct_daily_store_revenue", "reconcile_daily_store_revenue") in checks
    assert ("shop/orders", "ingestion_lag") in checks
    assert ("shop/orders", "dbt_source_freshness") in checks
    assert ("live/daily_store_revenue", "matches_query") in checks
    assert ("live/daily_store_revenue", "freshness_slo") in checks
    assert orch.defs.resolve_sensor_def("freshness_observer") is not None
    verify = orch.defs.resolve_job_def("verify_live_views")
    assert dg.AssetCheckKey(dg.AssetKey(["live", "daily_store_revenue"]), "freshness_slo") in \
        verify.asset_layer.asset_graph.asset_check_keys
    assert ("marts/fct_daily_store_revenue", "freshness_check") in checks
    assert any(n.startswith("not_null_") for n in names)  # dbt tests
    # dbt source tests are checks of the ingestion assets, run by the unpartitioned dbt build
    assert ("shop/orders", "source_not_null_shop_orders_placed_at") in checks
    # the reconciliation checks run with the marts (a UI materialisation reconciles)
    job = orch.defs.resolve_job_def("daily_marts")
    assert dg.AssetCheckKey(dg.AssetKey(["marts", "fct_daily_store_revenue"]),
                            "reconcile_daily_store_revenue") in job.asset_layer.asset_graph \
        .asset_check_keys


def test_partitions_start_at_the_first_day_of_data(orch) -> None:
    daily = orch.defs.resolve_asset_graph().get(
        dg.AssetKey(["marts", "fct_daily_store_revenue"])).partitions_def
    assert daily.start.date() == orch.days[0]  # TIDEMARK_PARTITIONS_START, as up records it


def test_partitions_start_is_read_at_each_load_not_fixed_at_import(orch, monkeypatch) -> None:
    """The daily partitions were a module constant of the dbt definitions: the first import
    fixed the start (round 38's CI: a test module imported at collection fixed the 30-day
    fallback for every later test; a Dagster started before the first day of data kept the
    fallback until a restart). Each load of the definitions now reads it."""
    from orchestration.definitions import build_defs, defs
    from orchestration.defs.dbt import partitions

    mart = dg.AssetKey(["marts", "fct_daily_store_revenue"])
    later = orch.days[0] + timedelta(days=2)
    monkeypatch.setenv("TIDEMARK_PARTITIONS_START", later.isoformat())
    for loaded in (build_defs(orch.resource), defs()):  # defs(): what Dagster calls at load
        daily = loaded.resolve_asset_graph().get(mart).partitions_def
        assert daily.start.date() == later
        assert loaded.resolve_job_def("daily_marts").partitions_def.start.date() == later
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert partitions.batch_window(yesterday + timedelta(days=1), 30)[0] == later.isoformat()
