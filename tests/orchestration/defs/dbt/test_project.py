"""dbt setup: a project dbt cannot parse is a clear error; old invocation directories are
cleaned. (A missing manifest is prepared: tests/orchestration/defs/test_entry_points.py.)"""

from __future__ import annotations

import os
import time

import pytest

from orchestration.defs.dbt import project as dbt_setup
from orchestration.defs.errors import DefinitionsError


def test_a_project_dbt_cannot_parse_is_explained(monkeypatch, tmp_path) -> None:
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: broken\nversion: '1'\nconfig-version: 2\n"
                                             "profile: tidemark\n")
    (project / "models" / "bad.sql").write_text("select {{ ref( }}\n")
    (project / "profiles.yml").write_text((dbt_setup.dbt_project_dir() / "profiles.yml")
                                          .read_text())
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(tmp_path / "target"))
    with pytest.raises(DefinitionsError,
                       match="(?s)dbt parse of .* failed.*dbt parse --project-dir"):
        dbt_setup.require_manifest(dbt_setup.tidemark_dbt_project())


def test_clean_invocations_keeps_the_newest(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(tmp_path))
    made = []
    for i in range(5):
        path = dbt_setup.invocation_dir("op", f"run{i}abcdefgh")
        path.mkdir(parents=True)
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
        made.append(path)
    removed = dbt_setup.clean_invocations(keep=2)
    assert sorted(removed) == sorted(made[:3])
    assert sorted(p for p in (tmp_path / "runs").iterdir()) == sorted(made[3:])
