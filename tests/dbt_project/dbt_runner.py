"""Run the real dbt project from tests: in-process ``dbtRunner`` with a manifest parsed once.

dbt reads its connection from the environment (dbt_project/profiles.yml), so :class:`DbtProject`
sets ``TIDEMARK_DBT_*`` from a landing URL for the duration of each invocation, and sends dbt's
``target/`` and logs to a temporary directory so the repository tree stays clean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dbt.cli.main import dbtRunner, dbtRunnerResult

from tidemark.stack.dbt import dbt_env, environment

DBT_PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"


class DbtError(AssertionError):
    """A dbt invocation the test expected to succeed failed."""


class DbtProject:
    """The dbt project bound to one landing database, parsed once.

    Args:
        landing_url: the landing database dbt builds in.
        work_dir: temporary directory for ``target/`` and logs.
    """

    def __init__(self, landing_url: str, work_dir: Path) -> None:
        self.env = dbt_env(landing_url, work_dir, target="ci")
        self.target_path = work_dir / "target"
        result = self.invoke("parse", check=True)
        self.manifest = result.result

    def invoke(self, *args: str, vars: dict[str, Any] | None = None,
               check: bool = True) -> dbtRunnerResult:
        """Run one dbt command (``"build"``, ``"run"``...) with the project's flags.

        Args:
            args: the command and its arguments, e.g. ``("run", "-s", "tag:daily")``.
            vars: dbt ``--vars`` (as JSON).
            check: raise :class:`DbtError` when dbt reports a failure.

        Returns:
            dbt's result.
        """
        # target/ and logs go where DBT_TARGET_PATH / DBT_LOG_PATH of self.env say.
        argv = [*args, "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT),
                "--no-use-colors", "--quiet"]
        if vars:
            argv += ["--vars", json.dumps(vars, default=str)]
        manifest = getattr(self, "manifest", None)
        with environment(self.env):
            result = dbtRunner(manifest=manifest).invoke(argv)
        if check and not result.success:
            raise DbtError(f"dbt {' '.join(args)} failed: {describe_failure(result)}")
        return result


def describe_failure(result: dbtRunnerResult) -> str:
    """A short text naming what failed in a dbt result."""
    if result.exception is not None:
        return str(result.exception)
    messages = []
    for node_result in getattr(result.result, "results", None) or []:
        if str(node_result.status) not in ("success", "pass"):
            messages.append(f"{node_result.node.unique_id}: {node_result.status}: "
                            f"{node_result.message}")
    return "; ".join(messages) or "unknown failure"
