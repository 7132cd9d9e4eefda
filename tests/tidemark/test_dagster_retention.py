"""Retention of Dagster's run history (``tidemark.stack.dagster_retention``): old runs go only
when later runs hold everything the UI shows — each partition's latest materialization, its
failed status, each check's latest evaluation — on a real instance in a ``tidemark up`` home
(SQLite storage, the home's ``dagster.yaml``) with real materializations of small assets."""

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from tidemark.settings import Settings
from tidemark.stack.dagster_proc import dagster_home
from tidemark.stack.dagster_retention import prune_runs

DAYS = dg.DailyPartitionsDefinition(start_date="2026-11-01")
FAIL = {"partitions": set()}  # the partitions whose materialization raises
WEEK = timedelta(days=7)


@dg.asset(partitions_def=DAYS)
def daily(context: dg.AssetExecutionContext) -> None:
    """A daily partitioned asset; fails for the partitions in ``FAIL``."""
    if context.partition_key in FAIL["partitions"]:
        raise RuntimeError(f"partition {context.partition_key} fails on purpose")


@dg.asset
def whole() -> None:
    """An unpartitioned asset."""


@dg.asset_check(asset=whole)
def whole_ok() -> dg.AssetCheckResult:
    """A check of ``whole``."""
    return dg.AssetCheckResult(passed=True)


WHOLE_CHECK = dg.AssetCheckKey(dg.AssetKey("whole"), "whole_ok")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An instance in a ``tidemark up`` Dagster home (its dagster.yaml, SQLite storage)."""
    home = dagster_home(Settings(home=tmp_path, port=55432))
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst
    FAIL["partitions"].clear()


def build(instance: dg.DagsterInstance, partition: str | None = None,
          fail: bool = False) -> str:
    """Materialize ``daily`` for ``partition`` (else ``whole`` with its check); the run id."""
    if partition is None:
        result = dg.materialize([whole, whole_ok], instance=instance)
    else:
        if fail:
            FAIL["partitions"].add(partition)
        result = dg.materialize([daily], instance=instance, partition_key=partition,
                                raise_on_error=False)
        FAIL["partitions"].discard(partition)
        assert result.success is not fail
    return result.run_id


def check_only(instance: dg.DagsterInstance) -> str:
    """Evaluate ``whole_ok`` alone (a check-only run); the run id."""
    defs = dg.Definitions(assets=[whole], asset_checks=[whole_ok])
    job = defs.resolve_implicit_global_asset_job_def()
    return job.get_subset(asset_selection=set(), asset_check_selection={WHOLE_CHECK}) \
        .execute_in_process(instance=instance).run_id


def ui_state(instance: dg.DagsterInstance) -> dict:
    """What the UI shows of the assets: materialized partitions, each partition's latest
    materialization (run and storage id), failed partitions read from the events afresh, the
    check's latest evaluation and ``whole``'s latest materialization."""
    from dagster._core.storage.partition_status_cache import (
        get_and_update_asset_status_cache_value,
    )

    key = dg.AssetKey("daily")
    parts = sorted(instance.get_materialized_partitions(key))
    latest = {}
    for part in parts:
        record = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=key, asset_partitions=[part]), limit=1).records[0]
        latest[part] = (record.run_id, record.storage_id)
    instance.wipe_asset_cached_status([key])  # rebuilt from the events, as after a new start
    status = get_and_update_asset_status_cache_value(instance, key, DAYS)
    failed = sorted(DAYS.deserialize_subset(status.serialized_failed_partition_subset)
                    .get_partition_keys()) if status else []
    summary = instance.event_log_storage.get_asset_check_summary_records([WHOLE_CHECK])
    check = summary[WHOLE_CHECK].last_check_execution_record
    completed = summary[WHOLE_CHECK].last_completed_check_execution_record
    whole_latest = instance.get_latest_materialization_event(dg.AssetKey("whole"))
    return {"materialized": parts, "latest": latest, "failed": failed,
            "check": (check.run_id, check.status.value) if check else None,
            "check_completed": completed.run_id if completed else None,
            "whole": whole_latest.run_id if whole_latest else None}


def later(days: int = 8) -> datetime:
    """A time ``days`` from now: every run ended now is then older than a week."""
    return datetime.now(UTC) + timedelta(days=days)


def run_ids(instance: dg.DagsterInstance) -> set[str]:
    return {r.run_id for r in instance.get_runs()}


def test_superseded_runs_go_and_each_partitions_latest_stays(instance) -> None:
    a1 = build(instance, "2026-11-01")
    b1 = build(instance, "2026-11-02")
    a2 = build(instance, "2026-11-01")
    w1 = build(instance)
    a3 = build(instance, "2026-11-01")
    w2 = build(instance)
    before = ui_state(instance)
    assert before["materialized"] == ["2026-11-01", "2026-11-02"]
    storage = Path(instance.root_directory) / "storage"
    shard = Path(instance.event_log_storage.path_for_shard(a1))
    assert shard.exists() and (storage / a1).is_dir()  # its event log and compute logs

    plan = prune_runs(instance, WEEK, now=later(), keep_per_job=1)

    assert ui_state(instance) == before
    assert sorted(r.run_id for r in plan.delete) == sorted([a1, a2, w1])
    assert run_ids(instance) == {b1, a3, w2}
    assert not shard.exists() and not (storage / a1).exists()
    assert plan.bytes_freed > 0
    assert "latest materialization" in plan.kept[b1]


def test_a_failed_run_goes_once_its_partition_is_built_again(instance) -> None:
    failed_then_built = build(instance, "2026-11-03", fail=True)
    rebuilt = build(instance, "2026-11-03")
    still_failed = build(instance, "2026-11-04", fail=True)
    newest = build(instance)
    before = ui_state(instance)
    assert before["failed"] == ["2026-11-04"]

    plan = prune_runs(instance, WEEK, now=later(), keep_per_job=1)

    assert ui_state(instance) == before
    assert [r.run_id for r in plan.delete] == [failed_then_built]
    assert run_ids(instance) == {rebuilt, still_failed, newest}
    assert plan.kept[still_failed].startswith("unbuilt planned partition")


def test_check_only_runs_go_when_a_later_run_evaluated_the_check(instance) -> None:
    built = build(instance)
    first = check_only(instance)
    second = check_only(instance)
    before = ui_state(instance)
    assert before["check"] == (second, "SUCCEEDED")

    plan = prune_runs(instance, WEEK, now=later(), keep_per_job=1)

    assert ui_state(instance) == before
    assert [r.run_id for r in plan.delete] == [first]
    assert run_ids(instance) == {built, second}
    with instance.event_log_storage.index_connection() as conn:  # its check rows went too
        from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable as t

        assert conn.execute(t.select().where(t.c.run_id == first)).all() == []


def test_young_runs_a_jobs_newest_and_retention_zero_keep_every_run(instance) -> None:
    runs = [build(instance, "2026-11-05") for _ in range(4)]

    assert prune_runs(instance, WEEK, now=later(days=6), keep_per_job=1).delete == []
    assert prune_runs(instance, timedelta(0), now=later(), keep_per_job=1).delete == []
    plan = prune_runs(instance, WEEK, now=later(), keep_per_job=3)
    assert [r.run_id for r in plan.delete] == [runs[0]]
    assert run_ids(instance) == set(runs[1:])


def test_dry_run_says_what_it_would_delete_and_deletes_nothing(instance) -> None:
    old = build(instance, "2026-11-06")
    new = build(instance, "2026-11-06")

    plan = prune_runs(instance, WEEK, dry_run=True, now=later(), keep_per_job=1)

    assert [r.run_id for r in plan.delete] == [old]
    assert run_ids(instance) == {old, new}
    assert plan.summary(dry_run=True).startswith("Would delete 1 Dagster run(s)")
    assert os.path.exists(instance.event_log_storage.path_for_shard(old))


def test_the_command_prints_then_deletes_what_the_retention_lets_go(instance) -> None:
    import json
    import time

    from typer.testing import CliRunner

    from tidemark.cli.main import app

    runs = [build(instance, "2026-11-07") for _ in range(12)]  # a job's newest 10 stay
    time.sleep(1.1)  # every run ended more than the 1 s retention ago
    env = {"DAGSTER_HOME": instance.root_directory}
    runner = CliRunner()
    dry = runner.invoke(app, ["dagster", "prune", "--older-than", "1s", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert runs[0] in dry.output and runs[1] in dry.output and runs[2] not in dry.output
    assert "Would delete 2 Dagster run(s)" in dry.output
    assert "newest runs of their job" in dry.output
    assert run_ids(instance) == set(runs)

    done = runner.invoke(app, ["dagster", "prune", "--older-than", "1s", "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert [r["run_id"] for r in json.loads(done.output)["deleted"]] == runs[:2]
    assert run_ids(instance) == set(runs[2:])
    kept = runner.invoke(app, ["dagster", "prune", "--older-than", "0"], env=env)
    assert "every run is kept" in kept.output


def test_the_command_refuses_a_home_without_dagster_yaml(tmp_path) -> None:
    from typer.testing import CliRunner

    from tidemark.cli.main import app
    from tidemark.errors import DagsterRetentionError

    result = CliRunner().invoke(app, ["dagster", "prune"], env={"DAGSTER_HOME": str(tmp_path)})
    assert isinstance(result.exception, DagsterRetentionError)
    assert f"No Dagster home at {tmp_path}" in str(result.exception)
