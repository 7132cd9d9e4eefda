"""dbt sources for a user's own database, as for the demo's ``shop``.

A data engineer registers ``mydb`` (``tidemark source add``), scaffolds its contracts
(``tidemark contracts init mydb``) and writes a staging model reading
``{{ source('mydb', 'accounts') }}``. ``dbt_project/scripts/generate_sources.py`` must give
them the sources ``mydb`` (the mirror) and ``mydb_cdc`` (the changelog), keyed in Dagster onto
the ingestion asset ``mydb/accounts``; it used to write the demo's file only, and ``dbt build``
failed with "depends on a source named 'mydb.accounts' which was not found".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dbt.cli.main import dbtRunner

from tests.dbt_project.extension import REPO, SKIP, copy_env

CONTRACT = """\
version: 1
description: public.accounts of source mydb.
primary_key: [aid]
event_time: null
compatibility: backward
allowed_lateness: 1h
freshness: {loaded_at: updated_at, warn_after: 1h, error_after: 1d}
columns:
  aid: {type: integer}
  bid: {type: integer, nullable: true}
  abalance: {type: integer, nullable: true, min: -100000}
  updated_at: {type: timestamptz, nullable: true}
"""

MODEL = """\
select a.aid as account_id, a.bid as branch_id, a.abalance as balance,
    (select count(*) from {{ source('mydb_cdc', 'mydb__accounts') }}) as changes
from {{ source('mydb', 'accounts') }} as a
"""


def _generate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "dbt_project/scripts/generate_sources.py", *args],
                          cwd=root, env=copy_env(root), capture_output=True, text=True,
                          timeout=300, check=False)


def _copy_with_a_users_source(root: Path) -> Path:
    """A copy of the repository with contracts/mydb/accounts.yml and a staging model over it."""
    shutil.copytree(REPO, root, ignore=SKIP)
    (root / "contracts" / "mydb").mkdir()
    (root / "contracts" / "mydb" / "accounts.yml").write_text(CONTRACT)
    staging = root / "dbt_project" / "models" / "staging"
    (staging / "stg_mydb__accounts.sql").write_text(MODEL)
    return staging


def test_a_users_source_gets_dbt_sources_its_models_parse_over(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    staging = _copy_with_a_users_source(root)

    generated = _generate(root)
    assert generated.returncode == 0, generated.stderr
    assert "_mydb__sources.yml" in generated.stdout
    sources = yaml.safe_load((staging / "_mydb__sources.yml").read_text())["sources"]
    assert [(s["name"], s.get("schema")) for s in sources] == [("mydb", "mydb"),
                                                               ("mydb_cdc", "cdc")]
    mirror, changelog = sources[0]["tables"][0], sources[1]["tables"][0]
    assert mirror["name"] == "accounts" and changelog["name"] == "mydb__accounts"
    # freshness is measured on mydb's own changelog, not shop's
    assert '"cdc"."mydb__accounts"' in mirror["config"]["loaded_at_query"]
    assert '"cdc"."mydb__accounts"' in changelog["config"]["loaded_at_query"]
    # the demo's committed file is written exactly as before
    assert (staging / "_shop__sources.yml").read_text() == (
        REPO / "dbt_project" / "models" / "staging" / "_shop__sources.yml").read_text()
    assert _generate(root, "--check").returncode == 0

    # dbt parses the user's model over those sources
    project = root / "dbt_project"
    result = dbtRunner().invoke(["parse", "--project-dir", str(project), "--profiles-dir",
                                 str(project), "--target-path", str(tmp_path / "target"),
                                 "--log-path", str(tmp_path / "logs"), "--quiet"])
    assert result.success, result.exception
    node = result.result.nodes["model.tidemark.stg_mydb__accounts"]
    assert sorted(node.depends_on.nodes) == ["source.tidemark.mydb.accounts",
                                             "source.tidemark.mydb_cdc.mydb__accounts"]

    # and Dagster keys both onto the ingestion asset mydb/accounts
    from orchestration.defs.dbt.translator import TidemarkTranslator
    translator = TidemarkTranslator()
    keys = {tuple(translator.get_asset_key(source.to_dict()).path)
            for name, source in result.result.sources.items() if ".mydb" in name}
    assert keys == {("mydb", "accounts")}


@pytest.mark.slow
def test_the_projects_tests_build_a_users_source_model(tmp_path: Path) -> None:
    # The user's CI (pytest) with a model over their own source: the project's tests landed
    # the demo only (relation "mydb.accounts" does not exist when staging was built) and
    # required every model reading a source to be a stg_shop__ model.
    root = tmp_path / "repo"
    _copy_with_a_users_source(root)
    assert _generate(root).returncode == 0
    tests = [f"tests/dbt_project/test_project.py::{name}" for name in (
        "test_only_staging_models_read_sources_one_per_mirror_table",
        "test_marts_enforce_contracts_and_other_layers_are_views",
        "test_metric_logic_has_unit_tests")]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *tests, "-v", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "inner")],
        cwd=root, env=copy_env(root), capture_output=True, text=True, timeout=1500, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and output.count(" PASSED") == 3, output[-6000:]


def test_a_source_without_contracts_is_refused_with_what_to_do(tmp_path: Path) -> None:
    generated = _generate(REPO, "--source", "nosuch", "--check")
    assert generated.returncode == 2
    assert "no contracts for source(s) nosuch" in generated.stderr
    assert "tidemark contracts init NAME" in generated.stderr
