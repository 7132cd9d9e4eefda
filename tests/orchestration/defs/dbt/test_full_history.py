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

    day = built.built_days[-1].isoformat()
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
