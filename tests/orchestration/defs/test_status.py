"""``tidemark status``: every layer summarised from the real stack, as JSON and for people."""

from __future__ import annotations

import json

import dagster as dg
from typer.testing import CliRunner

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
    marts = {m["mart"]: m for m in summary["batch"]}
    assert marts["fct_daily_store_revenue"]["latest_day"] == built.closed_days[-1].isoformat()
    pairs = {p["pair"]: p for p in summary["reconciliation"]}
    assert pairs["daily_store_revenue"]["reconciled_days"] == len(built.closed_days)
    assert pairs["daily_store_revenue"]["drifting_days"] == []
    assert "no Dagster instance" in summary["dagster"]["error"]

    human = CliRunner().invoke(app, ["status"])
    assert human.exit_code == 0
    assert "daily marts" in human.output and "fct_daily_store_revenue" in human.output


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
