"""The ``dbt`` resource: no dbt adapter built in the Dagster process unless asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.defs.dbt.project import tidemark_dbt_project
from orchestration.defs.dbt.resource import TidemarkDbtResource
from orchestration.defs.resources import TidemarkResource
from tidemark.stack.dbt import dbt_child_executable


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_PG_PORT", "56789")
    monkeypatch.delenv("TIDEMARK_LANDING_URL", raising=False)
    return tmp_path


def _invoke(dbt: TidemarkDbtResource, home: Path):
    invocation = TidemarkResource().dbt_cli(dbt, ["debug", "--config-dir"],
                                            target_path=home / "run", raise_on_error=False)
    invocation.wait()
    return invocation


def test_a_dbt_command_builds_no_adapter_in_the_dagster_process(home: Path) -> None:
    # dagster-dbt built one before every dbt command (profile, project, every macro parsed:
    # 0.5-1.5 s of CPU on the step's critical path) for metadata Tidemark never fetches.
    dbt = TidemarkDbtResource(project_dir=tidemark_dbt_project(),
                              dbt_executable=dbt_child_executable())
    assert _invoke(dbt, home).adapter is None


def test_adapter_in_process_builds_dagster_dbts_adapter(home: Path) -> None:
    dbt = TidemarkDbtResource(project_dir=tidemark_dbt_project(),
                              dbt_executable=dbt_child_executable(), adapter_in_process=True)
    assert type(_invoke(dbt, home).adapter).__name__ == "PostgresAdapter"
