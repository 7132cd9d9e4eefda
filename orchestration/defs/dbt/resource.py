"""The ``dbt`` resource: dagster-dbt's CLI resource, minus a ``dbt --version`` per run.

dagster-dbt asks the dbt executable for its version (a ``dbt --version`` child process, ~3 s of
CPU) once per run before the first dbt command, to tell dbt-core from dbt Fusion. The ``dbt``
of this environment (:func:`tidemark.stack.dbt.dbt_executable`, or ``dbt-child`` which starts
it) is the installed dbt-core,
whose version the package metadata gives at once; an explicitly configured other executable is
still asked.
"""

from functools import cached_property
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version

from dagster_dbt import DbtCliResource
from packaging import version

from tidemark.stack.dbt import dbt_child_executable, dbt_executable


class TidemarkDbtResource(DbtCliResource):
    """``DbtCliResource`` that reads the version of the installed dbt-core."""

    @cached_property
    def _cli_version(self) -> version.Version:
        if self.dbt_executable in ("dbt", dbt_executable(), dbt_child_executable()):
            try:
                return version.parse(installed_version("dbt-core"))
            except PackageNotFoundError:
                pass
        return super()._cli_version
