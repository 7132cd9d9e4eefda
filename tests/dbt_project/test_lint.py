"""``sqlfluff lint dbt_project`` passes from the repository root, with no database at all.

The jinja templater (config in .sqlfluff) renders the models with dbt's builtins and the
project's macros; the lint runs with every connection variable unset, as on a fresh clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_sqlfluff_lint_passes_without_a_database(tmp_path: Path) -> None:
    sqlfluff = shutil.which("sqlfluff", path=str(Path(sys.executable).parent)) or "sqlfluff"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TIDEMARK_", "DBT_", "PG"))}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sqlfluff, "lint", "dbt_project", "--format", "github-annotation-native"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "dbt_project/models" not in result.stdout  # no file has a finding
    assert "dbt_project/tests" not in result.stdout
