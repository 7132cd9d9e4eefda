"""The Dagster code location of Tidemark: ``orchestration.definitions:defs``.

``defs`` is a function Dagster calls at each load of the code location (``@dg.definitions``):
importing this module builds nothing, and each load reads the settings, the dbt manifest and the
daily partitions' start as they are then (:func:`build_defs`).

Merges the definitions of each system (``orchestration/defs/<system>/``) and binds the
resources: ``tidemark`` (database URLs, resolved at run time) and ``dbt`` (the dbt project).
Loading reads the dbt manifest (see ``orchestration.defs.dbt.state``) and never connects to a
database. A dbt project that does not parse never stops the ingestion and live-view systems:
the dbt assets load from the last manifest that parsed, with the failure shown on each of them
and in the definitions' metadata; with no manifest at all, dbt and what reads the marts
(reconciliation, serving) are left out and one ``dbt/project`` asset says why. Either way the
``dbt_project_parses`` check fails on the dbt assets (``orchestration.defs.dbt.parse_check``).
"""

from __future__ import annotations

import dagster as dg

from orchestration.defs.dbt.project import tidemark_dbt_project
from orchestration.defs.dbt.resource import TidemarkDbtResource
from orchestration.defs.dbt.state import DbtState, current_state
from orchestration.defs.ingestion import definitions as ingestion
from orchestration.defs.live_views import definitions as live_views
from orchestration.defs.resources import TidemarkResource
from tidemark.stack.dbt import dbt_child_executable

#: The placeholder asset shown instead of the dbt assets when no manifest ever parsed.
DBT_PROJECT_KEY = dg.AssetKey(["dbt", "project"])


def dbt_defs(state: DbtState) -> list[dg.Definitions]:
    """The definitions that need dbt's manifest, or the ``dbt/project`` placeholder saying why
    there is none."""
    if state.manifest is not None:
        from orchestration.defs.dbt import definitions as dbt
        from orchestration.defs.reconciliation import definitions as reconciliation

        return [dbt.dbt_definitions(), reconciliation.defs]
    from orchestration.defs.dbt.parse_check import parse_check_defs

    check, sensor = parse_check_defs([DBT_PROJECT_KEY])  # red until the project parses
    return [dg.Definitions(assets=[dg.AssetSpec(
        DBT_PROJECT_KEY, group_name="dbt", description=f"⚠ {state.warning()}",
        metadata=state.metadata())], asset_checks=[check], sensors=[sensor])]


def build_defs(tidemark: TidemarkResource | None = None) -> dg.Definitions:
    """The code location's definitions, with ``tidemark`` as the connection resource.

    Args:
        tidemark: the resource to bind (tests point it at their databases); default: URLs
            from the stack settings at run time.
    """
    state = current_state()
    return dg.Definitions.merge(
        ingestion.defs, live_views.defs, *dbt_defs(state),
        dg.Definitions(resources={
            "tidemark": tidemark or TidemarkResource(),
            "dbt": TidemarkDbtResource(project_dir=tidemark_dbt_project(),
                                       dbt_executable=dbt_child_executable()),
        }, metadata=state.metadata()),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location, built when Dagster loads it (see the module docstring)."""
    return build_defs()
