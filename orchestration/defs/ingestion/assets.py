"""Ingestion assets: one observable asset per replicated table.

``shop/<table>`` assets are observed: data version = the table's newest applied LSN; metadata
lag (seconds, bytes), rows/s, dead letters, paused.
"""


import dagster as dg

from orchestration.defs.ingestion.state import TableSpec, TableState, read_states, table_specs
from orchestration.defs.keys import SOURCE, table_key
from orchestration.defs.resources import TidemarkResource

GROUP = "ingestion"


def _specs() -> list[dg.AssetSpec]:
    from datetime import timedelta

    out = []
    for t in table_specs(SOURCE):
        policy = None
        if t.loaded_at:
            policy = dg.FreshnessPolicy.time_window(
                fail_window=timedelta(seconds=t.error_after_s),
                warn_window=timedelta(seconds=min(t.warn_after_s, t.error_after_s - 1)))
        out.append(dg.AssetSpec(
            table_key(t.name), group_name=GROUP, kinds={"postgres"},
            description=(t.description or f"Replicated table {t.name}") +
            f" Landing mirror {SOURCE}.{t.name}, changelog cdc.{SOURCE}__{t.name}.",
            metadata={"loaded_at": t.loaded_at or "none"},
            freshness_policy=policy))
    return out


def states(tidemark: TidemarkResource, tables: list[str] | None = None) -> dict[str, TableState]:
    """Read the state of the given tables (default: all replicated ones)."""
    urls = tidemark.urls()
    specs: list[TableSpec] = [t for t in table_specs(SOURCE) if tables is None or t.name in tables]
    return read_states(urls.source, urls.landing, tidemark.source, specs)


@dg.multi_observable_source_asset(specs=_specs(), name="ingestion_tables",
                                  can_subset=True)
def ingestion_tables(context: dg.AssetExecutionContext, tidemark: TidemarkResource):
    """Observe the replicated tables: data version = newest applied LSN."""
    names = [k.path[-1] for k in context.selected_asset_keys]
    for name, state in states(tidemark, names).items():
        yield dg.ObserveResult(asset_key=table_key(name), metadata=state.metadata(),
                               data_version=dg.DataVersion(state.lsn or "none"))
