"""A correction run that ends FAILURE or CANCELED gives its days back: the correction sensor asks
again after a backoff, at most three times per day, then stops and says so (sensor skip reason,
an ERROR on the reconciliation check naming the mart, the days, the last run and what to do). A
reconciliation run that failed is asked again the same way. Round 36 (branch r36): on main the
days stayed marked requested and nothing was asked again for the whole session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import dagster as dg

from tests.orchestration.defs.reconciliation.test_checks import (
    _late_order,
    _revenue_check,
    rec,  # noqa: F401  (the fixture)
)

MART = "fct_daily_store_revenue"


def _requests_for(result, day) -> list[dg.RunRequest]:
    if isinstance(result, dg.SkipReason):
        return []
    return [r for r in result.run_requests if r.tags.get("tidemark/correction") == MART
            and r.partition_key_range == dg.PartitionKeyRange(day.isoformat(), day.isoformat())]


def _launched(built, request: dg.RunRequest) -> dg.DagsterRun:
    """The run the daemon would create for ``request``, not started yet."""
    run = dg.DagsterRun(job_name=request.job_name, run_id=str(uuid.uuid4()),
                        status=dg.DagsterRunStatus.NOT_STARTED, tags=request.tags)
    built.instance.add_run(run)
    return run


def _backoff_passed(built, day) -> None:
    """The wait after the last failure is over (the clock moved on, without waiting for it)."""
    built.sql("update tidemark.reconciled_days set correction_failed_at = correction_failed_at"
              " - interval '1 day' where mart = %s and day = %s", (MART, day))


def test_a_failed_late_correction_is_asked_again_then_given_up(built, rec) -> None:  # noqa: F811
    day = built.built_days[-1]
    assert _revenue_check(built, rec).passed
    _late_order(built, datetime.combine(day, time(20), tzinfo=UTC), store=1, amount=7.77)
    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    [request] = _requests_for(rec.reconciliation_corrections(context), day)
    runs = []
    try:
        for attempt in (1, 2, 3):
            run = _launched(built, request)
            runs.append(run.run_id)
            if attempt == 3:
                built.instance.report_run_canceled(run, "canceled by `tidemark up` stopping")
            else:
                built.instance.report_run_failed(run, "Failed to start: code server unreachable")
            waiting = rec.reconciliation_corrections(context)
            assert not _requests_for(waiting, day)  # the backoff: no hot loop of failing runs
            # the run gave its day back, and the sensor says so (main: "No drifted days ...")
            assert isinstance(waiting, dg.SkipReason) and run.run_id[:8] in waiting.skip_message
            _backoff_passed(built, day)
            again = rec.reconciliation_corrections(context)
            if attempt < 3:
                [request] = _requests_for(again, day)
                assert request.tags["tidemark/reason"] == "late data"
        assert isinstance(waiting, dg.SkipReason) and "Stopped asking" in waiting.skip_message
        assert isinstance(again, dg.SkipReason)
        assert f"marts.{MART} for {day.isoformat()}" in again.skip_message
        assert runs[-1] in again.skip_message and "re-run those days" in again.skip_message
        stuck = _revenue_check(built, rec)
        assert not stuck.passed and stuck.severity == dg.AssetCheckSeverity.ERROR
        assert "No correction is coming" in stuck.description and runs[-1] in stuck.description
        assert stuck.metadata["correction_given_up_days"].value == [day.isoformat()]

        # the cause fixed, the user re-runs the day: it reconciles and the count starts over
        fixed = built.job("daily_marts").execute_in_process(
            instance=built.instance, tags=request.tags, asset_selection=request.asset_selection)
        assert fixed.success and _revenue_check(built, rec).passed
        assert built.sql("select distinct correction_attempts, correction_failed_run from"
                         " tidemark.reconciled_days where mart = %s and day = %s",
                         (MART, day)) == [(0, None)]
    finally:
        for run_id in runs:
            built.instance.delete_run(run_id)


def test_a_drift_correction_a_dbt_error_failed_is_asked_again(built, rec) -> None:  # noqa: F811
    """The correction run fails for real: dbt cannot write the day (a constraint rejects it)."""
    day = built.built_days[-2]
    built.sql("update marts.fct_daily_store_revenue set gross_revenue = gross_revenue + 3"
              " where order_date = %s and store_id = (select min(store_id) from"
              " marts.fct_daily_store_revenue where order_date = %s)", (day, day))
    assert not _revenue_check(built, rec).passed
    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    [request] = _requests_for(rec.reconciliation_corrections(context), day)
    built.sql(f"alter table marts.fct_daily_store_revenue add constraint r36_reject check"
              f" (order_date <> '{day.isoformat()}') not valid")
    try:
        failed = built.job("daily_marts").execute_in_process(
            instance=built.instance, tags=request.tags, asset_selection=request.asset_selection,
            raise_on_error=False)
    finally:
        built.sql("alter table marts.fct_daily_store_revenue drop constraint r36_reject")
    try:
        assert not failed.success
        assert failed.dagster_run.status == dg.DagsterRunStatus.FAILURE
        waiting = rec.reconciliation_corrections(context)
        assert isinstance(waiting, dg.SkipReason) and failed.run_id[:8] in waiting.skip_message
        _backoff_passed(built, day)
        [again] = _requests_for(rec.reconciliation_corrections(context), day)
        fixed = built.job("daily_marts").execute_in_process(
            instance=built.instance, tags=again.tags, asset_selection=again.asset_selection)
        assert fixed.success and _revenue_check(built, rec).passed
    finally:
        built.instance.delete_run(failed.run_id)


def test_a_failed_reconciliation_run_is_asked_again_bounded(built) -> None:
    from orchestration.defs.reconciliation.runs import reconciliation_retry

    later = datetime.now(UTC) + timedelta(days=1)
    runs = []
    try:
        for attempt in (1, 2, 3):
            run = dg.DagsterRun(job_name="reconciliation", run_id=str(uuid.uuid4()),
                                status=dg.DagsterRunStatus.NOT_STARTED)
            built.instance.add_run(run)
            runs.append(run.run_id)
            built.instance.report_run_failed(run, "Failed to start")
            retry = reconciliation_retry(built.instance, "reconciliation", now=later)
            if attempt < 3:
                # not before the backoff passed: no hot loop of failing runs
                assert reconciliation_retry(built.instance, "reconciliation") is None
                assert isinstance(retry, dg.RunRequest)
                assert retry.job_name == "reconciliation" and retry.run_key == f"retry-{run.run_id}"
        assert isinstance(retry, str) and run.run_id in retry and "launch the" in retry
    finally:
        for run_id in runs:
            built.instance.delete_run(run_id)
