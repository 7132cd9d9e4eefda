"""dbt setup: a clear error without a manifest; old invocation directories are cleaned."""

from __future__ import annotations

import os
import time

import pytest

from orchestration.defs.dbt import project as dbt_setup
from orchestration.defs.errors import DefinitionsError


def test_missing_manifest_is_explained(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(tmp_path / "none"))
    with pytest.raises(DefinitionsError, match="No dbt manifest at .*tidemark up"):
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
