"""``tidemark status --slo``: the verdict a person reads for each mart's yesterday."""

from __future__ import annotations

from tidemark.cli.slo import page
from tidemark.settings import Settings


def _mart(yesterday: str, pairs: list[str]) -> dict:
    return {"mart": "fct_daily_x", "closed_through": "2026-12-01", "yesterday": yesterday,
            "reconciled_by": pairs, "held_by": "shop.orders", "watermark": "2026-12-02 00:10"}


def _promise(row: dict) -> dict:
    slo = page({"ingestion": {"error": "not asked"}, "finality": [row]}, Settings())
    (promise,) = slo["promises"]
    assert promise["promise"] == "fct_daily_x: yesterday"
    return {**promise, "verdict": slo["verdict"]}


def test_a_final_day_keeps_the_promise() -> None:
    got = _promise(_mart("final", ["x_pair"]))
    assert (got["state"], got["verdict"]) == ("ok", "kept")
    assert "reconciled (x_pair)" in got["why"]


def test_a_closed_day_of_a_mart_no_view_reconciles_is_done() -> None:
    got = _promise(_mart("closed", []))
    assert (got["state"], got["verdict"]) == ("ok", "kept")
    assert "no live view reconciles" in got["why"]


def test_a_closed_day_waiting_for_its_reconciliation_is_pending_not_open() -> None:
    got = _promise(_mart("closed", ["x_pair"]))
    assert (got["state"], got["verdict"]) == ("pending", "at risk")
    assert "not reconciled yet (x_pair)" in got["why"] and "open" not in got["why"]


def test_an_open_day_names_the_table_holding_it() -> None:
    got = _promise(_mart("open", ["x_pair"]))
    assert (got["state"], got["verdict"]) == ("open", "at risk")
    assert "held by the watermark of shop.orders (2026-12-02 00:10)" in got["why"]


def test_the_verdict_names_the_states_it_counts_as_at_risk(capsys) -> None:
    """The verdict's 'at risk' count is spelled out in the words the table uses (pending,
    unknown...), so a reader can find those promises."""
    from tidemark.cli.slo import show_verdict

    rows = [_mart("closed", ["x_pair"]), _mart("closed", ["y_pair"]), _mart("open", ["z"])]
    show_verdict(page({"ingestion": {"error": "not asked"}, "finality": rows}, Settings()))
    out = " ".join(capsys.readouterr().out.split())
    assert "AT RISK (0 missed, 3 at risk: 1 open, 2 pending, 3 promises)" in out


def test_one_promise_is_said_in_the_singular(capsys) -> None:
    """A user with one promise (their own source's ingestion lag) read "1 promises"."""
    from tidemark.cli.slo import show_verdict

    show_verdict(page({"ingestion": {"error": "not asked"}, "finality": [_mart("final", ["x"])]},
                      Settings()))
    out = " ".join(capsys.readouterr().out.split())
    assert "KEPT (0 missed, 0 at risk, 1 promise)" in out, out


def _yesterday_iso() -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


def _run(status: str, trigger: str = "reconciliation_corrections") -> dict:
    day = _yesterday_iso()
    return {"status": status, "run_id": "c0ffee00-1234", "partition_range": [day, day],
            "started_at": "2026-12-03T19:18:12+00:00", "trigger": trigger}


def test_a_day_a_correction_run_rebuilds_is_correcting_not_at_risk(capsys) -> None:
    # the demo's late orders start a correction every 1-3 minutes: the verdict read AT RISK
    # ("2 pending") most of the time on a stack doing what it should
    from tidemark.cli.slo import show_verdict

    summary = {"ingestion": {"error": "not asked"}, "finality": [_mart("closed", ["x_pair"])],
               "up": {"demo": {"beyond_lateness_share": 0.01}},
               "dagster": {"latest_runs": {"daily_marts": _run("STARTED")},
                           "checks": [{"asset": "marts/fct_daily_x", "check": "freshness_check",
                                       "status": "planned", "passed": None,
                                       "description": None, "run_id": "c0ffee00-1234"}]}}
    slo = page(summary, Settings())
    states = {p["promise"]: p for p in slo["promises"]}
    day = states["fct_daily_x: yesterday"]
    assert (day["state"], slo["verdict"]) == ("correcting", "kept")
    assert "c0ffee00" in day["why"] and "expected in the demo" in day["why"]
    assert states["marts/fct_daily_x deadline"]["state"] == "checking"
    show_verdict(slo)
    assert "in progress, not at risk: 1 checking, 1 correcting" in capsys.readouterr().out
    # a planned evaluation of another run in flight (not the job's latest) is checking too
    summary["dagster"]["checks"].append({**summary["dagster"]["checks"][0],
                                         "asset": "marts/fct_daily_y", "run_id": "older-run"})
    slo = page(summary, Settings())
    states = {p["promise"]: p for p in slo["promises"]}
    assert states["marts/fct_daily_y deadline"]["state"] == "checking"
    assert "older-ru" in states["marts/fct_daily_y deadline"]["why"]
    summary["dagster"]["checks"].pop()

    # the same day with the run ended (or failed) and nothing rebuilding it: pending, at risk
    summary["dagster"]["latest_runs"] = {"daily_marts": _run("FAILURE")}
    summary["dagster"]["checks"][0]["status"] = "execution_failed"
    slo = page(summary, Settings())
    states = {p["promise"]: p for p in slo["promises"]}
    assert states["fct_daily_x: yesterday"]["state"] == "pending"
    assert states["marts/fct_daily_x deadline"]["state"] == "unknown"
    assert "failed before it ran" in states["marts/fct_daily_x deadline"]["why"]
    assert slo["verdict"] == "at risk"


def test_only_the_demo_outbox_dead_letters_are_called_expected() -> None:
    from tidemark.cli.status import expected_in_demo

    demo = {"source": "shop", "table": "app_events", "malformed_share": 0.02}
    row = {"asset": "shop/app_events", "check": "dead_letters", "severity": "WARN"}
    assert "2% of the app_events events malformed on purpose" in expected_in_demo(row, demo)
    assert expected_in_demo(row, None) is None  # no demo load: needs action
    assert expected_in_demo({**row, "asset": "shop/orders"}, demo) is None
    assert expected_in_demo({**row, "check": "ingestion_lag"}, demo) is None


def _orders_watermark(state: str) -> dict:
    return {"table": "orders", "watermark": "2026-12-06 22:02:00", "allowed_lateness_s": 7200.0,
            "delay_s": 7200.1, "state": state}


def test_an_open_day_whose_watermark_is_on_time_is_waiting_not_at_risk(capsys) -> None:
    """Yesterday cannot close before its holding table's allowed lateness has passed after
    midnight UTC (2 h for the demo's orders, 6 h for its app events): on a stack doing what
    it should, the verdict read AT RISK ("4 open") from midnight until then, every day
    (seen at 00:02 UTC, round 48)."""
    from tidemark.cli.slo import show_verdict

    summary = {"ingestion": {"error": "not asked"}, "finality": [_mart("open", ["x_pair"])],
               "watermarks": [_orders_watermark("ok")]}
    slo = page(summary, Settings())
    promise = next(p for p in slo["promises"] if p["promise"] == "fct_daily_x: yesterday")
    assert (promise["state"], slo["verdict"]) == ("waiting", "kept")
    assert "watermark of shop.orders (2026-12-02 00:10) passes midnight UTC, about 2 h" \
        in promise["why"]
    show_verdict(slo)
    out = " ".join(capsys.readouterr().out.split())
    assert "KEPT (0 missed, 0 at risk, 2 promises; in progress, not at risk: 1 waiting)" in out


def test_an_open_day_whose_watermark_is_behind_is_at_risk() -> None:
    for state in ("warn", "error", "unknown"):
        summary = {"ingestion": {"error": "not asked"}, "finality": [_mart("open", ["x_pair"])],
                   "watermarks": [_orders_watermark(state)]}
        slo = page(summary, Settings())
        promise = next(p for p in slo["promises"] if p["promise"] == "fct_daily_x: yesterday")
        assert promise["state"] == "open", state
        assert slo["verdict"] in ("at risk", "missed"), state


def test_an_open_day_of_a_registered_source_finds_its_named_watermark() -> None:
    """Beside the demo, a registered source's watermark rows are named ``<source>.<table>``."""
    row = {**_mart("open", ["x_pair"]), "held_by": "erp.orders"}
    marks = [{**_orders_watermark("warn")}, {**_orders_watermark("ok"), "table": "erp.orders"}]
    slo = page({"ingestion": {"error": "not asked"}, "finality": [row], "watermarks": marks},
               Settings())
    promise = next(p for p in slo["promises"] if p["promise"] == "fct_daily_x: yesterday")
    assert promise["state"] == "waiting"


def test_a_queued_run_is_said_queued_not_at_none() -> None:
    """A correction run still in the queue has no start time yet: ``status --slo`` read
    "(daily_marts, queued at None)" on a fresh ``tidemark up`` (round 49)."""
    summary = {"ingestion": {"error": "not asked"}, "finality": [_mart("closed", ["x_pair"])],
               "dagster": {"latest_runs": {"daily_marts": {**_run("QUEUED"),
                                                           "started_at": None}},
                           "checks": [{"asset": "marts/fct_daily_x", "check": "freshness_check",
                                       "status": "planned", "passed": None,
                                       "description": None, "run_id": "c0ffee00-1234"}]}}
    states = {p["promise"]: p for p in page(summary, Settings())["promises"]}
    for promise in ("fct_daily_x: yesterday", "marts/fct_daily_x deadline"):
        assert "None" not in states[promise]["why"], states[promise]["why"]
        assert "queued, not started yet" in states[promise]["why"]
    # a started run still says when it started
    summary["dagster"]["latest_runs"]["daily_marts"] = _run("STARTED")
    states = {p["promise"]: p for p in page(summary, Settings())["promises"]}
    assert "started at 2026-12-03T19:18:12+00:00" in states["marts/fct_daily_x deadline"]["why"]
