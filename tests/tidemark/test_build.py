"""The runs ``tidemark up`` executes in its own process are recorded as runs of the code location:
the Runs page shows their target (the assets and checks of an asset run) and the Overview
timeline, which groups runs by code location, lists them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from tidemark.settings import Settings
from tidemark.stack.build import BuildError, execute
from tidemark.stack.dagster_proc import CODE_LOCATION


@dg.asset
def upstream() -> None:
    """An asset left out of the run."""


@dg.asset(deps=[upstream])
def chosen() -> None:
    """The asset the run materialises."""


@dg.asset_check(asset=upstream)
def upstream_ok() -> dg.AssetCheckResult:
    """A check of an asset the run does not materialise (as the replicated tables' checks)."""
    return dg.AssetCheckResult(passed=True)


@dg.asset_check(asset=chosen)
def chosen_ok() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset_check(asset=chosen)
def chosen_left_out() -> dg.AssetCheckResult:
    raise AssertionError("not selected: never runs")


@dg.op
def broken() -> None:
    raise ValueError("the op's own message")


def _instance(tmp_path: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(tmp_path / "dagster"))


def test_an_asset_run_records_its_target_and_code_location(tmp_path: Path) -> None:
    (tmp_path / "dagster").mkdir()
    defs = dg.Definitions(assets=[upstream, chosen],
                          asset_checks=[upstream_ok, chosen_ok, chosen_left_out])
    job = defs.get_implicit_global_asset_job_def()
    checks = {dg.AssetCheckKey(dg.AssetKey("upstream"), "upstream_ok"),
              dg.AssetCheckKey(dg.AssetKey("chosen"), "chosen_ok")}
    instance = _instance(tmp_path)
    try:
        run_id = execute(job, instance, Settings(home=tmp_path, port=55432),
                         {"tidemark/trigger": "tidemark up"}, None, "build",
                         selection=({dg.AssetKey("chosen")}, checks))
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.asset_selection == {dg.AssetKey("chosen")}
        assert run.asset_check_selection == checks
        origin = run.remote_job_origin.repository_origin
        assert (origin.code_location_origin.location_name, origin.repository_name,
                run.remote_job_origin.job_name) == (CODE_LOCATION, "__repository__",
                                                    "__ASSET_JOB")
        assert run.tags["tidemark/trigger"] == "tidemark up"
        evaluated = {e.asset_check_evaluation_data.check_name for e in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
            for e in [e.event_log_entry.dagster_event]}
        assert evaluated == {"upstream_ok", "chosen_ok"}
        assert instance.get_latest_materialization_event(dg.AssetKey("upstream")) is None
        assert instance.get_latest_materialization_event(dg.AssetKey("chosen")) is not None
    finally:
        instance.dispose()


def test_a_failed_run_names_the_step_and_its_message(tmp_path: Path) -> None:
    (tmp_path / "dagster").mkdir()
    job = dg.JobDefinition(graph_def=dg.GraphDefinition(name="g", node_defs=[broken]),
                           name="broken_job")
    instance = _instance(tmp_path)
    try:
        with pytest.raises(BuildError, match="  step broken: ValueError: the op's own message"):
            execute(job, instance, Settings(home=tmp_path, port=55432), {}, None, "landing")
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert run.remote_job_origin.job_name == "broken_job"
    finally:
        instance.dispose()
