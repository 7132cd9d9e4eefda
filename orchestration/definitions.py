"""The Dagster code location of Tidemark: ``orchestration.definitions:defs``.

Merges the definitions of each part (``orchestration/defs/``) and binds the resources:
``tidemark`` (database URLs, resolved at run time) and ``dbt`` (the dbt project). Loading reads
the prepared dbt manifest (see ``orchestration.defs.dbt_setup``) and never connects to a
database.
"""

from __future__ import annotations

import dagster as dg
from dagster_dbt import DbtCliResource

from orchestration.defs import batch, checks, ingestion, live_views, reconciliation, serving
from orchestration.defs.freshness import partition_freshness_defs
from orchestration.defs.resources import TidemarkResource


def build_defs(tidemark: TidemarkResource | None = None) -> dg.Definitions:
    """The code location's definitions, with ``tidemark`` as the connection resource.

    Args:
        tidemark: the resource to bind (tests point it at their databases); default: URLs
            from the stack settings at run time.
    """
    return dg.Definitions.merge(
        ingestion.defs, live_views.defs, batch.defs, checks.defs, reconciliation.defs,
        serving.defs, partition_freshness_defs([batch.dbt_daily_marts]),
        dg.Definitions(resources={
            "tidemark": tidemark or TidemarkResource(),
            "dbt": DbtCliResource(project_dir=batch.PROJECT),
        }),
    )


defs = build_defs()
