"""A dbt project that does not parse never stops the platform (real ``dbt parse``, real loads of
the code location in a fresh process, as the webserver, the daemon and each run load it).

On main, one model with a Jinja typo made ``import orchestration.definitions`` raise: the UI's
Reload, and every run launched afterwards (ingestion and live views too: a run worker loads the
code location again), failed with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration.defs.dbt import project as dbt_setup
from orchestration.defs.errors import DefinitionsError
from tests.orchestration.defs.dbt.test_project import small_project
from tests.orchestration.defs.test_entry_points import REPO, fresh_env

TYPO = ("{{ source('shop', 'stores') }}", "{{ source('shop', 'stores') }")
STORES = Path("models/staging/stg_shop__stores.sql")
LOAD = """
import json, warnings
warnings.simplefilter("ignore")
import dagster as dg
import orchestration.definitions as d
defs = d.defs()  # what Dagster calls at each load
g = defs.resolve_asset_graph()
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in g.get_all_asset_keys()),
    "descriptions": {k.to_user_string(): g.get(k).description or "" for k in
                     g.get_all_asset_keys()},
    "jobs": sorted(j.name for j in defs.resolve_all_job_defs()),
    "sensors": sorted(s.name for s in defs.sensors or []),
    "schedules": sorted(s.name for s in defs.schedules or []),
    "metadata": sorted(defs.metadata)}))
"""


def written_before(path: Path) -> None:
    """Date ``path`` (the manifest, a recorded failure) 10 s back: a file saved now is an edit
    after it, without sleeping."""
    earlier = time.time() - 10
    os.utime(path, (earlier, earlier))


def test_a_broken_model_keeps_the_last_manifest_and_names_file_and_line(monkeypatch,
                                                                       tmp_path) -> None:
    from orchestration.defs.dbt.state import load_dbt_state, needs_parse, project_status

    project = small_project(tmp_path, {"stg_a.sql": "select 1 as a_id\n",
                                       "fct_b.sql": "select a_id from {{ ref('stg_a') }}\n"})
    target = tmp_path / "target"
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(target))
    dbt = dbt_setup.tidemark_dbt_project()
    assert load_dbt_state(dbt).failure is None
    good = (target / "manifest.json").read_text()

    broken = project / "models" / "fct_b.sql"
    written_before(target / "manifest.json")
    broken.write_text("select a_id from {{ ref('stg_a') }\n")
    state = load_dbt_state(dbt)
    assert state.manifest == target / "manifest.json" and state.manifest.read_text() == good
    assert (state.failure.file, state.failure.line) == ("models/fct_b.sql", 1)
    assert "unexpected '}'" in state.failure.message
    assert "models/fct_b.sql line 1: unexpected '}'" in state.warning()
    assert "last manifest that parsed" in state.warning()
    assert not needs_parse(dbt)  # the next loads reuse the failure: no parse per load
    shown = project_status(project, target)
    assert shown["parses"] is False and shown["failure"]["where"] == "models/fct_b.sql line 1"
    with pytest.raises(DefinitionsError, match="(?s)fct_b.sql line 1.*unexpected '}'.*Reload"):
        dbt_setup.require_manifest(dbt)

    written_before(target / "parse_failure.json")
    broken.write_text("select a_id from {{ ref('no_such_model') }}\n")
    state = load_dbt_state(dbt)
    assert state.failure.file == "models/fct_b.sql" and "no_such_model" in state.failure.message

    written_before(target / "parse_failure.json")
    broken.write_text("select a_id from {{ ref('stg_a') }}\n")
    (project / "models" / "schema.yml").write_text("models:\n  - name: [stg_a\n  - name: b\n")
    state = load_dbt_state(dbt)  # dbt names YAML "schema.yml", under its resource folder
    assert (state.failure.file, state.failure.line) == ("models/schema.yml", 3)

    written_before(target / "parse_failure.json")
    (project / "models" / "schema.yml").unlink()
    assert load_dbt_state(dbt).failure is None
    assert not (target / "parse_failure.json").exists()
    assert project_status(project, target)["parses"] is True


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the shipped dbt project and a manifest dbt parsed from it."""
    root = tmp_path_factory.mktemp("shipped")
    project = root / "dbt_project"
    shutil.copytree(REPO / "dbt_project", project,
                    ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    good = root / "good-target"
    env = {**os.environ, "TIDEMARK_DBT_PROJECT_DIR": str(project),
           "TIDEMARK_DBT_TARGET_PATH": str(good)}
    subprocess.run([sys.executable, "-W", "ignore", "-m", "orchestration.defs.dbt.project"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    return project, good / "manifest.json"


def load_location(tmp_path: Path, project: Path, target: Path) -> dict:
    """Load ``orchestration.definitions`` in a fresh process; what it holds."""
    env = fresh_env(tmp_path / "home", TIDEMARK_DBT_PROJECT_DIR=str(project),
                    TIDEMARK_DBT_TARGET_PATH=str(target))
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", LOAD], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def break_model(project: Path) -> None:
    model = project / STORES
    model.write_text(model.read_text().replace(*TYPO))


def assert_platform_loaded(loaded: dict) -> None:
    """Ingestion and live views, their jobs, sensors and schedules are all there."""
    assert {"live/daily_store_revenue", "shop/orders"} <= set(loaded["assets"])
    assert {"ingestion_catch_up", "verify_live_views"} <= set(loaded["jobs"])
    assert "ingestion_observer" in loaded["sensors"]


@pytest.mark.slow
def test_a_model_broken_after_a_parse_loads_the_last_manifest_with_a_warning(
        shipped, tmp_path) -> None:
    source, good = shipped
    project = tmp_path / "dbt_project"
    shutil.copytree(source, project)
    target = tmp_path / "target"
    target.mkdir()
    shutil.copy(good, target / "manifest.json")  # newer than every file of the copy...
    written_before(target / "manifest.json")
    break_model(project)  # ...but the model edited after it
    loaded = load_location(tmp_path, project, target)
    assert_platform_loaded(loaded)
    assert {"nightly_batch", "daily_marts"} <= set(loaded["jobs"])
    mart = loaded["descriptions"]["marts/fct_daily_store_revenue"]
    assert mart.startswith("⚠ dbt project does not parse: "
                           "models/staging/stg_shop__stores.sql line 4: unexpected '}'")
    assert "last manifest that parsed" in mart
    assert "dbt_parse_failure" in loaded["metadata"]


@pytest.mark.slow
def test_a_fresh_start_on_a_broken_model_loads_without_dbt_and_says_why(shipped,
                                                                         tmp_path) -> None:
    source, _ = shipped
    project = tmp_path / "dbt_project"
    shutil.copytree(source, project)
    break_model(project)
    loaded = load_location(tmp_path, project, tmp_path / "target")
    assert_platform_loaded(loaded)
    assert not [k for k in loaded["assets"] if k.startswith(("marts/", "staging/", "serving/"))]
    assert "nightly_batch" not in loaded["jobs"]
    why = loaded["descriptions"]["dbt/project"]
    assert "models/staging/stg_shop__stores.sql line 4: unexpected '}'" in why
    assert "No dbt asset is loaded" in why
