"""dbt setup: a project dbt cannot parse is a clear error; old invocation directories are
cleaned. (A missing manifest is prepared: tests/orchestration/defs/test_entry_points.py.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestration.defs.dbt import project as dbt_setup
from orchestration.defs.errors import DefinitionsError


def small_project(root: Path, models: dict[str, str]) -> Path:
    """A dbt project ``root/project`` with the shipped profile and ``models`` (file -> SQL)."""
    project = root / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: small\nversion: '1.0.0'\n"
                                             "config-version: 2\nprofile: tidemark\n")
    (project / "profiles.yml").write_text((dbt_setup.dbt_project_dir() / "profiles.yml")
                                          .read_text())
    for name, sql in models.items():
        (project / "models" / name).write_text(sql)
    return project


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


def test_a_model_added_after_the_manifest_is_parsed_at_the_next_load(monkeypatch,
                                                                      tmp_path) -> None:
    """The README's "Reload definitions" re-imports the definitions, which used to keep the
    manifest `tidemark up` had parsed: a new dbt model never appeared in the UI until the next
    `tidemark up`. A manifest older than a file of the project is parsed again."""
    import json

    project = small_project(tmp_path, {"stg_a.sql": "select 1 as a_id\n"})
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(tmp_path / "target"))

    def models() -> set[str]:
        path = dbt_setup.require_manifest(dbt_setup.tidemark_dbt_project())
        return {n["name"] for n in json.loads(path.read_text())["nodes"].values()}

    assert models() == {"stg_a"}
    written = (tmp_path / "target" / "manifest.json").stat().st_mtime
    (project / "models" / "fct_b.sql").write_text("select a_id from {{ ref('stg_a') }}\n")
    os.utime(project / "models" / "fct_b.sql", (written + 2, written + 2))
    assert models() == {"stg_a", "fct_b"}
    assert not dbt_setup.manifest_is_stale(dbt_setup.tidemark_dbt_project())


def test_a_model_removed_after_the_manifest_leaves_at_the_next_load(monkeypatch,
                                                                    tmp_path) -> None:
    """Removing a file changes no file's time, only its folder's: the manifest kept the removed
    model (and a broken file deleted as the fix was never parsed again)."""
    import json

    project = small_project(tmp_path, {"stg_a.sql": "select 1 as a_id\n",
                                       "fct_b.sql": "select a_id from {{ ref('stg_a') }}\n"})
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(tmp_path / "target"))
    dbt = dbt_setup.tidemark_dbt_project()
    dbt_setup.require_manifest(dbt)
    earlier = time.time() - 10
    os.utime(dbt.manifest_path, (earlier, earlier))
    (project / "models" / "fct_b.sql").unlink()
    assert dbt_setup.manifest_is_stale(dbt)
    path = dbt_setup.require_manifest(dbt)
    assert {n["name"] for n in json.loads(path.read_text())["nodes"].values()} == {"stg_a"}
