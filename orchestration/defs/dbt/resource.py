"""The ``dbt`` resource: dagster-dbt's CLI resource, minus two costs of each invocation.

* dagster-dbt asks the dbt executable for its version (a ``dbt --version`` child process, ~3 s
  of CPU) once per run before the first dbt command, to tell dbt-core from dbt Fusion. The
  ``dbt`` of this environment (:func:`tidemark.stack.dbt.dbt_executable`, or ``dbt-child`` which
  starts it) is the installed dbt-core, whose version the package metadata gives at once; an
  explicitly configured other executable is still asked.
* Before each dbt command dagster-dbt also builds a dbt adapter in the Dagster process (profile,
  project, every macro parsed: 0.5 s of CPU, 1.5 s with the first imports, on the critical path
  of the step). Only ``fetch_row_counts()`` and ``fetch_column_metadata()`` of the invocation's
  event stream use it, and Tidemark's assets call neither: it is built only when
  ``adapter_in_process`` is set (a user's asset that wants that metadata sets it).
"""

from functools import cached_property
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from typing import Any

from dagster_dbt import DbtCliResource
from packaging import version
from pydantic import Field

from tidemark.stack.dbt import dbt_child_executable, dbt_executable


class TidemarkDbtResource(DbtCliResource):
    """``DbtCliResource`` that reads the version of the installed dbt-core and builds no dbt
    adapter in the Dagster process unless ``adapter_in_process`` is set."""

    adapter_in_process: bool = Field(
        default=False,
        description="Build dagster-dbt's dbt adapter in the Dagster process before each dbt "
                    "command, as fetch_row_counts() / fetch_column_metadata() need.")

    @cached_property
    def _cli_version(self) -> version.Version:
        if self.dbt_executable in ("dbt", dbt_executable(), dbt_child_executable()):
            try:
                return version.parse(installed_version("dbt-core"))
            except PackageNotFoundError:
                pass
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args: Any) -> Any:
        """dagster-dbt's adapter when ``adapter_in_process`` is set, else None (the event stream
        then attaches no row counts or column metadata, which nothing of Tidemark asks for)."""
        return super()._initialize_dbt_core_adapter(args) if self.adapter_in_process else None
