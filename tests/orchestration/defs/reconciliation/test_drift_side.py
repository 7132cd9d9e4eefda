"""Reconciliation tells which side of a drift is wrong and what repairs it.

A live view silently wrong (a row of its state changed by hand) makes the check fail naming the
view, the day and the store; re-running the mart (what the correction sensor does) cannot fix
it, and the check says so and names the repair, ``tidemark views rebuild``, which turns it green.
A drift that survives a re-run of the mart while the view equals its query is not called late
data to be corrected again.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
from typer.testing import CliRunner

from tests.orchestration.defs.conftest import check_results

PAIR = "daily_store_revenue"
CHECK = ("marts/fct_daily_store_revenue", f"reconcile_{PAIR}")


def _revenue_check(built):
    from orchestration.defs.keys import check_name, mart_key

    key = dg.AssetCheckKey(mart_key("fct_daily_store_revenue"), check_name(PAIR))
    return check_results(built.run_checks([key]))[CHECK]


def test_a_wrong_live_view_is_named_with_its_repair(built) -> None:
    from orchestration.defs.reconciliation.sensors import reconciliation_corrections
    from tidemark.cli.main import app

    assert _revenue_check(built).passed
    day = built.built_days[0]
    store = built.sql("select min(store_id) from live.daily_store_revenue where order_date = %s",
                      (day,))[0][0]
    (suffix,) = built.sql("select suffix from tidemark.views where name = %s", (PAIR,))[0]
    built.sql(f'update tidemark_state."{suffix}" set __a2_s = __a2_s + 100 where order_date ='
              f' %s and store_id = %s', (day, store))

    failed = _revenue_check(built)
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    text = failed.description
    assert day.isoformat() in text and f"store_id {store}" in text, text
    assert "live.daily_store_revenue itself is wrong" in text, text
    assert "tidemark views rebuild daily_store_revenue" in text, text
    assert failed.metadata["live_view_matches_query"].value is False
    from orchestration.defs.keys import check_name, mart_key
    from tidemark.stack.dagster_status import check_results as status_checks

    key = dg.AssetCheckKey(mart_key("fct_daily_store_revenue"), check_name(PAIR))
    [shown] = status_checks(built.instance, [key])  # what `tidemark status` prints
    assert shown["description"].endswith("then run the reconciliation job."), shown

    # The correction sensor re-runs the mart anyway; the day still drifts, and the check keeps
    # naming the live view, not "the correction sensor re-runs the mart".
    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    [request] = [r for r in reconciliation_corrections(context).run_requests
                 if r.partition_key_range == dg.PartitionKeyRange(day.isoformat(),
                                                                  day.isoformat())]
    rerun = built.job("daily_marts").execute_in_process(
        instance=built.instance, tags=request.tags, asset_selection=request.asset_selection)
    after = check_results(rerun)[CHECK]
    assert not after.passed and "views rebuild daily_store_revenue" in after.description
    assert "correction sensor re-runs" not in after.description

    result = CliRunner().invoke(app, ["views", "rebuild", PAIR, "--dsn", built.landing_url])
    assert result.exit_code == 0, result.output
    assert "equals its query" in result.output
    assert _revenue_check(built).passed


def test_a_drift_a_rerun_did_not_fix_is_not_left_to_the_sensor(built) -> None:
    """(``built``: the definitions import once the dbt manifest is prepared.)"""
    from orchestration.defs.reconciliation.checks import check_result
    from tidemark.reconciliation.compare import Comparison, DayResult
    from tidemark.reconciliation.pairs import load_pairs

    pair = next(p for p in load_pairs() if p.name == PAIR)
    day, other = date(2026, 3, 2), date(2026, 3, 3)
    drift = [{"store_id": "4", "order_date": d.isoformat(), "measure": "gross_revenue",
              "live": 1, "truth": 2, "difference": -1} for d in (day, other)]
    comparison = Comparison(pair, [DayResult(day, 3, 1), DayResult(other, 3, 1)], drift,
                            requested={day: datetime(2026, 3, 4, 3, tzinfo=UTC)},
                            live_wrong="")
    for d in comparison.days:
        d.totals = {m.name: [0, 0] for m in pair.measures}
    text = check_result(comparison).description
    assert "2026-03-02 still differ after marts.fct_daily_store_revenue was re-run" in text
    assert "live.daily_store_revenue equals its query" in text
    assert "re-runs marts.fct_daily_store_revenue for 2026-03-03" in text
    assert "store_id 4" in text
    comparison.queued = {day}
    assert ("marts.fct_daily_store_revenue for 2026-03-02 (a correction, or a closure run) is "
            "queued or running") in check_result(comparison).description


def test_late_rows_of_a_day_never_reconciled_are_not_said_after_its_reconciliation(
        built) -> None:
    """The late-data warning said "late rows landed after their reconciliation" for every day
    late rows explain, also for a day that never reconciled (built after it closed, late rows
    landed since): it says what is true for each."""
    from orchestration.defs.reconciliation.checks import check_result
    from tidemark.reconciliation.compare import Comparison, DayResult
    from tidemark.reconciliation.late import LateDay
    from tidemark.reconciliation.pairs import load_pairs

    pair = next(p for p in load_pairs() if p.name == PAIR)
    day, other = date(2026, 3, 2), date(2026, 3, 3)
    drift = [{"store_id": "4", "order_date": d.isoformat(), "measure": "gross_revenue",
              "live": 2, "truth": 1, "difference": 1} for d in (day, other)]
    at = datetime(2026, 3, 4, 3, tzinfo=UTC)
    late = {day: LateDay(day, 2, at - at.replace(hour=0), at, ("shop.orders",), at),
            other: LateDay(other, 1, at - at.replace(hour=0), at, ("shop.orders",), None)}
    comparison = Comparison(pair, [DayResult(day, 3, 1), DayResult(other, 3, 1)], drift,
                            late=late)
    for d in comparison.days:
        d.totals = {m.name: [0, 0] for m in pair.measures}
    result = check_result(comparison)
    assert result.severity == dg.AssetCheckSeverity.WARN
    text = result.description
    assert ("1 day(s) differ because late rows landed after their reconciliation (2026-03-02: "
            "2 late row(s))") in text, text
    assert ("1 day(s) not reconciled yet differ by late rows landed after they closed "
            "(2026-03-03: 1 late row(s))") in text, text
    assert "correction pending" in text
    del late[day]
    text = check_result(comparison).description
    assert "after their reconciliation" not in text and "not reconciled yet" in text, text

