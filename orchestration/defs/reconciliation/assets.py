"""Serving assets: ``serving/<pair>``, the view ``serving.<pair>`` (truth for reconciled days,
live numbers otherwise — and for reconciled days late rows landed for since, until their
correction — with a ``status``); created by ``tidemark.reconciliation.serving``."""


import dagster as dg

from orchestration.defs.keys import mart_key, serving_key, view_key
from orchestration.defs.resources import TidemarkResource
from tidemark.reconciliation.finality import mart_event_tables
from tidemark.reconciliation.pairs import load_pairs
from tidemark.reconciliation.serving import SCHEMA, deploy_serving, drop_orphans


def _specs() -> list[dg.AssetSpec]:
    return [dg.AssetSpec(serving_key(p.name), group_name=SCHEMA, kinds={"postgres"},
                         deps=[mart_key(p.mart), view_key(p.live_view)],
                         description=f"{p.name}: marts.{p.mart} for reconciled days (final), "
                                     f"live.{p.live_view} for the others (provisional).")
            for p in load_pairs()]


@dg.multi_asset(specs=_specs(), can_subset=True, name="serving_views")
def serving_views(context: dg.AssetExecutionContext, tidemark: TidemarkResource):
    """Create the selected serving views."""
    from orchestration.defs.dbt.project import manifest_path

    landing = tidemark.urls().landing_app
    wanted = {k.path[-1] for k in context.selected_asset_keys}
    tables = mart_event_tables(manifest_path())
    dropped, kept = drop_orphans(landing, {p.name for p in load_pairs()})
    for name in dropped:
        context.log.info(f"dropped {SCHEMA}.{name}: its pair is no longer in reconciliation.yml")
    for message in kept:
        context.log.warning(message)
    for pair in load_pairs():
        if pair.name in wanted:
            rows = deploy_serving(landing, pair, tables.get(pair.mart, []))
            yield dg.MaterializeResult(asset_key=serving_key(pair.name),
                                       metadata={"rows": rows, "view": f"{SCHEMA}.{pair.name}"})
