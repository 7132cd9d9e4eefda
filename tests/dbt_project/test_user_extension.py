"""A user's own table, contract, models, live view and pair keep the project's tests green.

README "Extending": a user adds a ``refunds`` table to their source, its contract, a staging
model, a daily mart, a live view and a reconciliation pair (``user_extension/``). The demo
source the tests seed has no such table. On a copy of the repository with those files
(``extension.py``), the dbt project's tests run as the user's CI runs them: the checks derived
from the manifest, the contracts and the view files cover the user's models too (their
daily-mart shape, primary key, sources, live/mart columns), the demo-only checks keep
comparing the shipped marts with independent computations, and the reconciliation of a pair
over a table the demo leaves empty is skipped with its reason; every view file, the user's
too, deploys on the seeded demo and stays equal to its query under the demo load; every
contract file loads and each demo table keeps its contract; ``tidemark up`` on a fresh home
creates the user's table from its contract and starts with the user's view.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.dbt_project.extension import copy_env, extended_copy

# `tidemark up` on a fresh home, stopped and started again
UP_TEST = "test_up_serves_sql_restarts_a_killed_ingestion_stops_and_resumes_after_a_kill"
TESTS = ["tests/dbt_project/test_project.py", "tests/dbt_project/test_marts.py",
         "tests/dbt_project/test_reconciliation.py", "tests/dbt_project/test_lint.py",
         "tests/streaming_views/test_demo_views.py", "tests/contracts/test_loader.py",
         "tests/contracts/test_schema_match.py",
         f"tests/tidemark/test_up.py::{UP_TEST}"]


@pytest.mark.slow
def test_the_dbt_project_tests_pass_with_a_users_table_model_and_view(tmp_path: Path) -> None:
    root = extended_copy(tmp_path / "repo")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *TESTS, "-v", "-rs", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "inner")],
        cwd=root, env=copy_env(root), capture_output=True, text=True, timeout=1800, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # the user's models and pair were in the checks, not left out of them
    for test_id in ("test_daily_marts_are_tagged_partitioned_by_their_day_column PASSED",
                    "test_pair_names_real_columns[store_refunds_daily] PASSED",
                    "test_mart_contracts_are_enforced_as_constraints PASSED",
                    "test_only_staging_models_read_sources_one_per_mirror_table PASSED",
                    f"{UP_TEST} PASSED"):
        assert test_id in output, output[-6000:]
    assert "SKIPPED" in output and "fct_daily_refunds reads refunds" in output, output[-6000:]
    with (root / "dbt_project" / "models" / "marts" / "daily" / "_daily__models.yml").open() as f:
        assert "fct_daily_refunds" in f.read()  # the copy is extended, not the repository
