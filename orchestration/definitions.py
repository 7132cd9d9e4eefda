"""The Dagster code location of Tidemark: ``orchestration.definitions:defs``.

Merges the definitions of each system (``orchestration/defs/<system>/``) and binds the
resources: ``tidemark`` (database URLs, resolved at run time) and ``dbt`` (the dbt project).
Loading reads the prepared dbt manifest (see ``orchestration.defs.dbt.project``) and never
connects to a database.
"""

from __future__ import annotations

import dagster as dg

from orchestration.defs.dbt import definitions as dbt
from orchestration.defs.dbt.assets import PROJECT
from orchestration.defs.dbt.resource import TidemarkDbtResource
from orchestration.defs.ingestion import definitions as ingestion
from orchestration.defs.live_views import definitions as live_views
from orchestration.defs.reconciliation import definitions as reconciliation
from orchestration.defs.resources import TidemarkResource
from tidemark.stack.dbt import dbt_child_executable


def build_defs(tidemark: TidemarkResource | None = None) -> dg.Definitions:
    """The code location's definitions, with ``tidemark`` as the connection resource.

    Args:
        tidemark: the resource to bind (tests point it at their databases); default: URLs
            from the stack settings at run time.
    """
    return dg.Definitions.merge(
        ingestion.defs, live_views.defs, dbt.defs, reconciliation.defs,
        dg.Definitions(resources={
            "tidemark": tidemark or TidemarkResource(),
            "dbt": TidemarkDbtResource(project_dir=PROJECT, dbt_executable=dbt_child_executable()),
        }),
    )


defs = build_defs()
