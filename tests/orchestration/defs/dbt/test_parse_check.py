"""A dbt project that does not parse shows as a FAILED check on the dbt assets (real ``dbt
parse``, a real Dagster instance: the sensor's tick is evaluated as the daemon does and its
check evaluations are recorded as the daemon records them).

On main, a broken model left every dbt asset green in the catalog: their last materialisations
and checks passed, only their descriptions said "⚠ dbt project does not parse".
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration.defs.dbt import parse_check
from orchestration.defs.dbt import project as dbt_setup
from orchestration.defs.dbt.parse_check import CHECK, parse_check_defs
from tests.orchestration.defs.dbt.test_broken_project import (  # noqa: F401 (fixture)
    break_model,
    shipped,
    written_before,
)
from tests.orchestration.defs.dbt.test_project import small_project
from tests.orchestration.defs.test_entry_points import REPO, fresh_env

MART = dg.AssetKey(["marts", "fct_daily_store_revenue"])
#: In a fresh process: load the code location, run one tick of the parse sensor, record its
#: events in a real (temporary) instance, print what the instance says of the mart's check.
TICK = """
import json, sys, warnings
warnings.simplefilter("ignore")
import dagster as dg
import orchestration.definitions as d
from orchestration.defs.dbt.parse_check import CHECK, SENSOR
sensor = next(s for s in d.defs().sensors if s.name == SENSOR)
key = dg.AssetCheckKey(dg.AssetKey(sys.argv[1].split("/")), CHECK)
with dg.instance_for_test() as instance:
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    evaluation = record.event.dagster_event.event_specific_data
    print(json.dumps({"status": record.status.value, "reported": len(data.asset_events),
                      "description": evaluation.description,
                      "severity": evaluation.severity.value,
                      "metadata": {k: str(v.value) for k, v in evaluation.metadata.items()}}))
"""


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None
         ) -> tuple[list[dg.AssetCheckEvaluation], str | None]:
    """One evaluation of ``sensor``; its check evaluations recorded in ``instance``."""
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return list(data.asset_events), data.cursor


def latest(instance: dg.DagsterInstance, key: dg.AssetCheckKey):
    """The latest recorded evaluation of the check ``key``: (status, evaluation)."""
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    return record.status.value, record.event.dagster_event.event_specific_data


def test_the_sensor_fails_the_check_while_a_model_does_not_parse_and_passes_after_the_fix(
        monkeypatch, tmp_path) -> None:
    project = small_project(tmp_path, {"stg_a.sql": "select 1 as a_id\n",
                                       "fct_b.sql": "select a_id from {{ ref('stg_a') }}\n"})
    target = tmp_path / "target"
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(target))
    dbt_setup.prepare_manifest()
    monkeypatch.setattr(parse_check, "PARSE_WAIT_S", None)  # each tick waits for its parse
    keys = [dg.AssetKey(["small", "stg_a"]), dg.AssetKey(["small", "fct_b"])]
    _, sensor = parse_check_defs(keys)
    check = dg.AssetCheckKey(keys[1], CHECK)
    with dg.instance_for_test() as instance:
        events, cursor = tick(sensor, instance, None)
        assert [e.passed for e in events] == [True, True]
        assert latest(instance, check)[0] == "SUCCEEDED"

        written_before(target / "manifest.json")
        broken = project / "models" / "fct_b.sql"
        broken.write_text("select a_id from {{ ref('stg_a') }\n")
        events, cursor = tick(sensor, instance, cursor)  # the sensor parses the edited project
        assert len(events) == 2 and not any(e.passed for e in events)
        status, evaluation = latest(instance, check)
        assert status == "FAILED" and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.description.startswith(
            "dbt project does not parse: models/fct_b.sql line 1: unexpected '}'")
        assert evaluation.metadata["file"].value == "models/fct_b.sql"
        assert evaluation.metadata["line"].value == "1"
        assert "unexpected '}'" in evaluation.metadata["dbt_message"].value

        again, same = tick(sensor, instance, cursor)  # nothing changed: nothing reported
        assert again == [] and same == cursor

        written_before(target / "parse_failure.json")
        broken.write_text("select a_id from {{ ref('stg_a') }}\n")
        events, cursor = tick(sensor, instance, cursor)
        assert [e.passed for e in events] == [True, True]
        status, evaluation = latest(instance, check)
        assert status == "SUCCEEDED" and evaluation.description.startswith(
            "dbt project parses")


def test_a_tick_does_not_wait_past_its_budget_for_a_parse(monkeypatch, tmp_path) -> None:
    """Dagster stops a sensor evaluation after 60 s; a dbt parse on a busy machine takes 10-40 s:
    a tick leaves a long parse running and the next tick reports it."""
    project = small_project(tmp_path, {"stg_a.sql": "select {{ ref( }}\n"})
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setattr(parse_check, "PARSE_WAIT_S", 0.01)
    key = dg.AssetKey(["dbt", "project"])
    _, sensor = parse_check_defs([key])
    with dg.instance_for_test() as instance:
        events, cursor = tick(sensor, instance, None)
        assert events == [] and cursor is None  # the parse is under way
        parse_check._pending.result()  # time passes: the parse ends before the next tick
        events, cursor = tick(sensor, instance, cursor)
        assert [e.passed for e in events] == [False]
        assert events[0].metadata["file"].value == "models/stg_a.sql"


def test_the_check_is_out_of_the_dbt_jobs_and_can_run_on_its_own(monkeypatch, tmp_path
                                                                ) -> None:
    project = small_project(tmp_path, {"stg_a.sql": "select {{ ref( }}\n"})
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(tmp_path / "target"))
    key = dg.AssetKey(["dbt", "project"])
    check, _ = parse_check_defs([key])
    with dg.instance_for_test() as instance:
        result = dg.materialize([dg.AssetSpec(key), check], instance=instance,
                                selection=dg.AssetSelection.checks(check),
                                raise_on_error=False)
        evaluation = result.get_asset_check_evaluations()[0]
    assert not evaluation.passed
    assert evaluation.metadata["file"].value == "models/stg_a.sql"


def run_tick(tmp_path: Path, project: Path, target: Path, key: str) -> dict:
    """Load the code location in a fresh process and run one tick of its parse sensor."""
    env = fresh_env(tmp_path / "home", TIDEMARK_DBT_PROJECT_DIR=str(project),
                    TIDEMARK_DBT_TARGET_PATH=str(target))
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", TICK, key], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_broken_model_fails_the_parse_check_of_the_marts_in_the_code_location(
        shipped, tmp_path) -> None:  # noqa: F811 (fixture)
    source, good = shipped
    project = tmp_path / "dbt_project"
    shutil.copytree(source, project)
    target = tmp_path / "target"
    target.mkdir()
    shutil.copy(good, target / "manifest.json")
    written_before(target / "manifest.json")
    break_model(project)
    shown = run_tick(tmp_path, project, target, MART.to_user_string())
    assert shown["status"] == "FAILED" and shown["severity"] == "ERROR"
    assert shown["reported"] > 10  # every dbt model
    assert shown["description"].startswith(
        "dbt project does not parse: models/staging/stg_shop__stores.sql line 4: "
        "unexpected '}'")
    assert shown["metadata"]["file"] == "models/staging/stg_shop__stores.sql"

    model = project / "models" / "staging" / "stg_shop__stores.sql"
    written_before(target / "parse_failure.json")
    model.write_text((source / "models" / "staging" / "stg_shop__stores.sql").read_text())
    shown = run_tick(tmp_path, project, target, MART.to_user_string())
    assert shown["status"] == "SUCCEEDED"  # the load parsed the fixed file
    assert shown["description"].startswith("dbt project parses")


@pytest.mark.slow
def test_a_fresh_start_on_a_broken_model_fails_the_check_of_dbt_project(
        shipped, tmp_path) -> None:  # noqa: F811 (fixture)
    source, _ = shipped
    project = tmp_path / "dbt_project"
    shutil.copytree(source, project)
    break_model(project)
    shown = run_tick(tmp_path, project, tmp_path / "target", "dbt/project")
    assert shown["status"] == "FAILED" and shown["reported"] == 1
    assert "stg_shop__stores.sql line 4" in shown["description"]
