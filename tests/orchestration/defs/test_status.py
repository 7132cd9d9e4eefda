"""``tidemark status``: every layer summarised from the real stack, as JSON and for people."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
from typer.testing import CliRunner

from contracts import load_contracts
from tidemark.cli.main import app


def test_status_json_covers_every_layer(built, monkeypatch, tmp_path) -> None:
    from orchestration.defs.keys import check_name, mart_key

    built.run_checks([dg.AssetCheckKey(mart_key("fct_daily_store_revenue"),
                                       check_name("daily_store_revenue"))])
    monkeypatch.setenv("TIDEMARK_SOURCE_URL", built.source_url)
    monkeypatch.setenv("TIDEMARK_LANDING_URL", built.landing_url)
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["ingestion"]["source"] == "shop"
    assert summary["ingestion"]["dead_letters"] >= 0
    assert {v["name"] for v in summary["live_views"]} >= {"daily_store_revenue"}
    assert {v["held_open_by"] for v in summary["live_views"]} == {"-"}  # no BI tab open
    assert isinstance(summary["lock_waits"], list)
    marts = {m["mart"]: m for m in summary["batch"]}
    assert marts["fct_daily_store_revenue"]["latest_day"] == built.built_days[-1].isoformat()
    pairs = {p["pair"]: p for p in summary["reconciliation"]}
    assert pairs["daily_store_revenue"]["reconciled_days"] == len(built.built_days)
    assert pairs["daily_store_revenue"]["drifting_days"] == []
    assert "no Dagster instance" in summary["dagster"]["error"]
    marks = {w["table"]: w for w in summary["watermarks"]}
    # one watermark per contract with an event time: the demo's five and a user's own
    shipped = {"app_events", "customers", "deliveries", "orders", "payments"}
    assert set(marks) == {t.name for t in load_contracts().tables("shop") if t.event_time}
    assert set(marks) >= shipped
    assert marks["orders"]["state"] == "ok" and marks["orders"]["watermark"]
    final = {f["mart"]: f for f in summary["finality"]}
    revenue = final["fct_daily_store_revenue"]
    assert "daily_store_revenue" in revenue["reconciled_by"]
    assert all(f["reconciled_by"] == [] for m, f in final.items()
               if m in ("fct_daily_funnel", "fct_daily_payments")), final
    # orders may arrive 2 h late: yesterday closes after 02:00 UTC (and is built if it had
    # closed when the batch ran)
    if built.built_days[-1] == datetime.now(UTC).date() - timedelta(days=1):
        assert revenue["yesterday"] == "final", revenue
        assert revenue["closed_through"] == built.built_days[-1].isoformat()

    human = CliRunner().invoke(app, ["status"], env={"COLUMNS": "220"})
    assert human.exit_code == 0
    assert "daily marts" in human.output and "fct_daily_store_revenue" in human.output
    assert "watermarks" in human.output and "finality" in human.output
    # a delay of hours reads as "ok" only beside the lateness it counts
    assert "allowed_lateness_s" in human.output


def test_status_shows_every_check_whoever_ran_it(built, monkeypatch, tmp_path) -> None:
    from orchestration.defs.keys import view_key
    from tidemark.settings import Settings
    from tidemark.stack.dagster_proc import prepare_dagster_home

    monkeypatch.setenv("TIDEMARK_SOURCE_URL", built.source_url)
    monkeypatch.setenv("TIDEMARK_LANDING_URL", built.landing_url)
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    home = prepare_dagster_home(Settings())  # external servers: SQLite storage in the home
    key = dg.AssetCheckKey(view_key("daily_store_revenue"), "matches_query")
    job = built.defs.get_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={key})
    with dg.DagsterInstance.from_config(str(home)) as instance:  # as a run from the UI would
        run = job.execute_in_process(instance=instance)
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    checks = {(c["asset"], c["check"]): c for c in json.loads(result.output)["dagster"]["checks"]}
    assert len(checks) == len(built.defs.resolve_asset_graph().asset_check_keys)
    mine = checks[("live/daily_store_revenue", "matches_query")]
    assert mine["passed"] is True and mine["run_id"] == run.run_id
    assert checks[("shop/orders", "ingestion_lag")]["status"] == "never"
    human = CliRunner().invoke(app, ["status"])
    assert "matches_query" in human.output and "dbt tests" in human.output


def test_status_reports_an_unreachable_layer(monkeypatch, tmp_path) -> None:
    from tests.support import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    monkeypatch.setenv("TIDEMARK_SOURCE_URL", url)
    monkeypatch.setenv("TIDEMARK_LANDING_URL", url)
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert "error" in summary["ingestion"] and "error" in summary["batch"]
