"""``sqlfluff lint dbt_project`` passes (postgres dialect, dbt templater; config in .sqlfluff).

The dbt templater compiles the project, which opens a connection: the lint runs against the
session's landing database, as CI does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.dbt_project.conftest import Landed

REPO = Path(__file__).resolve().parents[2]


def test_sqlfluff_lint_passes(landed: Landed) -> None:
    sqlfluff = shutil.which("sqlfluff", path=str(Path(sys.executable).parent)) or "sqlfluff"
    result = subprocess.run(
        [sqlfluff, "lint", "dbt_project", "--format", "github-annotation-native"],
        cwd=REPO, env={**os.environ, **landed.dbt.env}, capture_output=True, text=True,
        timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "dbt_project/models" not in result.stdout  # no file has a finding
