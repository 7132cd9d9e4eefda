"""``tidemark status``'s Dagster layer: a check whose run ended without evaluating it is not
"running" forever (round 25: a correction run that failed to start left 7 dbt tests, a
reconciliation and a deadline "running"/"unknown: planned" in the status for good)."""

from __future__ import annotations

import dagster as dg
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.events import AssetCheckEvaluationPlanned, DagsterEvent, DagsterEventType

from tidemark.cli.status import _outcome
from tidemark.stack.dagster_status import check_results


def _planned(instance: DagsterInstance, run_id: str, status: DagsterRunStatus,
             key: dg.AssetCheckKey) -> None:
    instance.add_run(DagsterRun(job_name="daily_marts", run_id=run_id, status=status))
    instance.report_dagster_event(DagsterEvent(
        event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
        job_name="daily_marts", event_specific_data=AssetCheckEvaluationPlanned(
            asset_key=key.asset_key, check_name=key.name)), run_id=run_id)


def test_a_planned_check_takes_the_outcome_of_its_ended_run(tmp_path) -> None:
    keys = {status: dg.AssetCheckKey(dg.AssetKey(["marts", f"m_{status.value.lower()}"]), "c")
            for status in (DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS,
                           DagsterRunStatus.STARTED)}
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        for n, (status, key) in enumerate(keys.items()):
            _planned(instance, f"run-{n}", status, key)
        rows = {r["asset"]: r for r in check_results(instance, list(keys.values()))}
    got = {asset: (r["status"], _outcome(r)) for asset, r in rows.items()}
    assert got == {"marts/m_failure": ("execution_failed", "error"),  # main: planned, running
                   "marts/m_success": ("skipped", "skipped"),
                   "marts/m_started": ("planned", "running")}
