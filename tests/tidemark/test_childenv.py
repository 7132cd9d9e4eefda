"""The dbt child's start: what ``python -m tidemark.stack.dbtchild`` imports before dbt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tidemark.stack import childenv, dbt

ROOT = Path(__file__).resolve().parents[2]


def test_the_dbt_child_imports_neither_psycopg_nor_the_settings() -> None:
    # Every dbt invocation of a run starts `python -m tidemark.stack.dbtchild` before dbt: it
    # imported tidemark.stack.dbt (psycopg, pydantic, the settings), ~0.5 s of CPU each time.
    code = ("import sys, tidemark.stack.dbtchild; "
            "print(sorted(m for m in ('psycopg', 'pydantic', 'pydantic_settings', "
            "'tidemark.settings', 'tidemark.stack.dbt') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_tidemark_stack_dbt_still_offers_the_child_environment() -> None:
    assert dbt.child_environment is childenv.child_environment
    assert dbt.is_secret("PGPASSWORD", "x") and not dbt.is_secret("TIDEMARK_DBT_PASSWORD", "x")
    assert dbt.dbt_executable() == childenv.dbt_executable()
