"""A day the correction sensor gave up on can be asked again once the cause is fixed (round 37,
branch r37): ``tidemark reconcile retry <day>`` clears its failed runs and the sensor asks at its
next tick, without a backoff; a re-run of the day from the UI that succeeds counts as its
correction (the check no longer says "no correction is coming" when one ran). The limits are
settings (``TIDEMARK_CORRECTION_ATTEMPTS``). On main a given-up day stayed given up until it
reconciled: no command, and a successful re-run that still drifted kept naming the old failed
runs."""

from __future__ import annotations

from datetime import UTC, datetime, time

import dagster as dg
from typer.testing import CliRunner

from tests.orchestration.defs.reconciliation.test_checks import (
    _late_order,
    _revenue_check,
    rec,  # noqa: F401  (the fixture)
)
from tests.orchestration.defs.reconciliation.test_failed_corrections import (
    MART,
    _backoff_passed,
    _launched,
    _requests_for,
)


def _give_up(built, rec, context, day, failures: int) -> list[str]:  # noqa: F811
    """Fail the day's correction runs ``failures`` times (as the daemon reports a run that did
    not start), each asked again after its backoff; returns the run ids."""
    [request] = _requests_for(rec.reconciliation_corrections(context), day)
    runs = []
    for attempt in range(1, failures + 1):
        run = _launched(built, request)
        runs.append(run.run_id)
        built.instance.report_run_failed(run, "Failed to start: code server unreachable")
        rec.reconciliation_corrections(context)  # gives the day back
        _backoff_passed(built, day)
        again = rec.reconciliation_corrections(context)
        if attempt < failures:
            [request] = _requests_for(again, day)
    assert isinstance(again, dg.SkipReason) and "Stopped asking" in again.skip_message
    return runs


def _retry(built, *args: str):
    from tidemark.cli.main import app

    return CliRunner().invoke(app, ["reconcile", "retry", *args, "--dsn", built.landing_url])


def test_a_given_up_day_is_asked_again_after_reconcile_retry(built, rec,  # noqa: F811
                                                              monkeypatch) -> None:
    from tidemark.reconciliation.errors import NothingToRetryError

    monkeypatch.setenv("TIDEMARK_CORRECTION_ATTEMPTS", "2")  # the setting: given up after 2
    day = built.built_days[-1]
    assert _revenue_check(built, rec).passed
    _late_order(built, datetime.combine(day, time(21), tzinfo=UTC), store=1, amount=5.55)
    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    runs = _give_up(built, rec, context, day, failures=2)
    try:
        stuck = _revenue_check(built, rec)
        assert not stuck.passed and "No correction is coming" in stuck.description
        command = f"tidemark reconcile retry --mart {MART} {day.isoformat()}"
        assert command in stuck.description, stuck.description  # the check names the command
        assert "2 correction runs failed" in stuck.description
        assert isinstance(rec.reconciliation_corrections(context), dg.SkipReason)  # given up

        nothing = _retry(built)  # neither days nor --all: says what is given up
        assert isinstance(nothing.exception, NothingToRetryError)
        assert f"marts.{MART} for {day.isoformat()}" in str(nothing.exception)
        bad = _retry(built, "yesterday")
        assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output

        done = _retry(built, day.isoformat())
        assert done.exit_code == 0, done.output
        assert f"marts.{MART}" in done.output and day.isoformat() in done.output
        assert runs[-1] in done.output  # the last failed run, for the record
        # the next tick asks again at once (no backoff), once
        [request] = _requests_for(rec.reconciliation_corrections(context), day)
        again = _retry(built, day.isoformat())  # a correction is requested: nothing to clear
        assert isinstance(again.exception, NothingToRetryError)

        fixed = built.job("daily_marts").execute_in_process(
            instance=built.instance, tags=request.tags, asset_selection=request.asset_selection)
        assert fixed.success and _revenue_check(built, rec).passed
        assert built.sql("select distinct correction_attempts from tidemark.reconciled_days"
                         " where mart = %s and day = %s", (MART, day)) == [(0,)]
    finally:
        for run_id in runs:
            built.instance.delete_run(run_id)


def test_a_rerun_from_the_ui_clears_a_given_up_day_even_if_it_still_drifts(built, rec  # noqa: F811
                                                                          ) -> None:
    """The user re-runs the day (the UI's Materialize of the partition) and it succeeds, but
    the day still drifts (here the live view is wrong): the check says what that re-run shows,
    not "no correction is coming ... 3 correction runs failed", and the sensor does not loop."""
    from orchestration.defs.dbt.partitions import range_tags
    from tidemark.cli.main import app

    day = built.built_days[0]
    assert _revenue_check(built, rec).passed
    store = built.sql("select min(store_id) from live.daily_store_revenue where order_date = %s",
                      (day,))[0][0]
    (suffix,) = built.sql("select suffix from tidemark.views where name ="
                          " 'daily_store_revenue'")[0]
    built.sql(f'update tidemark_state."{suffix}" set __a2_s = __a2_s + 100 where order_date ='
              f' %s and store_id = %s', (day, store))
    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    assert not _revenue_check(built, rec).passed  # drift: the sensor asks a correction
    runs = _give_up(built, rec, context, day, failures=3)
    try:
        assert "No correction is coming" in _revenue_check(built, rec).description

        rerun = built.job("daily_marts").execute_in_process(
            instance=built.instance, tags=range_tags(day.isoformat(), day.isoformat()),
            asset_selection=[rec.mart_key(MART)])
        assert rerun.success
        after = _revenue_check(built, rec)
        assert not after.passed  # the live view is still wrong
        assert "No correction is coming" not in after.description, after.description
        assert "correction_given_up_days" not in after.metadata
        assert "tidemark views rebuild daily_store_revenue" in after.description
        assert built.sql("select distinct correction_attempts, correction_failed_run,"
                         " correction_requested_at is not null from tidemark.reconciled_days"
                         " where mart = %s and day = %s", (MART, day)) == [(0, None, True)]
        # a re-run did not fix it: not asked again, and nothing is given up any more
        tick = rec.reconciliation_corrections(context)
        assert not _requests_for(tick, day)
        assert isinstance(tick, dg.SkipReason) and "Stopped asking" not in tick.skip_message
    finally:
        for run_id in runs:
            built.instance.delete_run(run_id)
        result = CliRunner().invoke(app, ["views", "rebuild", "daily_store_revenue", "--dsn",
                                          built.landing_url])
        assert result.exit_code == 0, result.output
    assert _revenue_check(built, rec).passed


def test_a_late_day_that_drifts_is_asked_once_per_tick(built, rec) -> None:  # noqa: F811
    """A late-data day whose corrections failed and were given up; the reconciliation records
    its drift for one pair of the mart (the mart's other pair still holds it reconciled, late
    rows after it); its failures are cleared (what `tidemark reconcile retry` does). The next
    tick asks one run, not one per path (drift and late data)."""
    day = built.built_days[-1]
    assert _revenue_check(built, rec).passed
    _late_order(built, datetime.combine(day, time(22), tzinfo=UTC), store=1, amount=3.33)
    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    runs = _give_up(built, rec, context, day, failures=3)
    try:
        assert not _revenue_check(built, rec).passed  # drift recorded, explained by late rows
        built.sql("update tidemark.reconciled_days set correction_attempts = 0,"
                  " correction_failed_run = null, correction_failed_at = null"
                  " where mart = %s and day = %s", (MART, day))
        [again] = _requests_for(rec.reconciliation_corrections(context), day)
        fixed = built.job("daily_marts").execute_in_process(
            instance=built.instance, tags=again.tags, asset_selection=again.asset_selection)
        assert fixed.success and _revenue_check(built, rec).passed
    finally:
        for run_id in runs:
            built.instance.delete_run(run_id)
