"""dbt tests tagged ``full_history`` run in the daily ``full_history_tests`` job, not in the
builds (real dbt builds in real Dagster runs on the test stack).

On main, ``unique_int_app_events_deduplicated_event_id`` and the other whole-history tests ran
in every nightly batch, ``tidemark up`` build and backfill, and no job ran them on their own.
"""

from __future__ import annotations

import dagster as dg

from tests.orchestration.defs.conftest import check_results

BIGGEST = "unique_int_app_events_deduplicated_event_id"
KEPT = "not_null_int_app_events_deduplicated_event_id"


def test_the_builds_leave_the_full_history_tests_to_their_daily_job(built) -> None:
    from orchestration.defs.dbt.assets import FULL_HISTORY
    from orchestration.defs.dbt.partitions import range_tags

    names = {k.name for k in FULL_HISTORY}
    assert BIGGEST in names and KEPT not in names
    for job in ("nightly_batch", "daily_marts"):
        assert not FULL_HISTORY & built.job(job).asset_layer.asset_graph.asset_check_keys

    day = built.closed_days[-1].isoformat()
    result = built.job("nightly_batch").execute_in_process(
        instance=built.instance, tags=range_tags(day, day))
    assert result.success
    ran = {name for _, name in check_results(result)}
    assert KEPT in ran and not names & ran  # dbt ran with --exclude tag:full_history

    result = built.job("full_history_tests").execute_in_process(instance=built.instance)
    assert result.success
    evaluations = check_results(result)
    assert {name for _, name in evaluations} == names
    assert all(e.passed for e in evaluations.values())
    assert not result.get_asset_materialization_events()  # the tests only, no model rebuilt


def test_the_full_history_schedule_runs_daily_after_the_nightly_batch(orch) -> None:
    schedule = orch.defs.resolve_schedule_def("full_history_tests_schedule")
    assert schedule.job_name == "full_history_tests"
    assert schedule.cron_schedule == "30 4 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_tidemark_ups_build_leaves_the_full_history_tests_to_their_daily_job(orch,
                                                                            tmp_path) -> None:
    """Round 37 (r37): the build of `tidemark up` (``DagsterBuild.plan``) evaluates every check
    of what it builds but the ``full_history`` tests; on main its first build ran all 6."""
    from orchestration.defs.dbt.assets import FULL_HISTORY
    from tidemark.settings import load_settings
    from tidemark.stack.build import DagsterBuild

    (tmp_path / "dagster").mkdir()
    builder = DagsterBuild(load_settings(home=tmp_path))
    try:
        plan = builder.plan(today=orch.closed_days[-1])
    finally:
        builder.close()
    names = {k.name for k in plan.check_keys}
    assert BIGGEST not in names and not FULL_HISTORY & plan.check_keys
    assert KEPT in names  # the row-level tests of the same model still run
    assert plan.first_day is not None  # the daily marts and their tests are in the build
    assert "reconcile_daily_store_revenue" in names
    # what the run evaluates is what progress expects: no check left waiting
    days = (plan.last_day - plan.first_day).days + 1
    assert plan.expected_events == len(plan.check_keys) + sum(
        days if builder.graph.get(k).partitions_def is not None else 1
        for k in plan.asset_keys)
