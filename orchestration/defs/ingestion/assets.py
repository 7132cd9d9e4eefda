"""Ingestion assets: one observable asset ``<source>/<table>`` per table contract.

Observed, not materialised (ingestion runs as its own process): metadata applied LSN, lag
(seconds, bytes), rows/s, dead letters, paused. The observations carry no data version on
purpose: the assets directly downstream (the live views, the dbt staging views) are views kept
current by the database itself, so a moving LSN must not mark them "Upstream data" (stale).
A table whose contract names a ``loaded_at`` column carries a time-window freshness policy
from the contract.
"""

from collections.abc import Iterable
from datetime import timedelta

import dagster as dg

from ingestion.errors import UnknownSourceError
from ingestion.names import changelog_table_name
from orchestration.defs.ingestion.state import (
    TableSpec,
    TableState,
    read_states,
    source_urls,
    table_specs,
)
from orchestration.defs.keys import table_key
from orchestration.defs.resources import TidemarkResource

GROUP = "ingestion"


def _specs() -> list[dg.AssetSpec]:
    out = []
    for t in table_specs():
        policy = None
        if t.loaded_at:
            policy = dg.FreshnessPolicy.time_window(
                fail_window=timedelta(seconds=t.error_after_s),
                warn_window=timedelta(seconds=min(t.warn_after_s, t.error_after_s - 1)))
        out.append(dg.AssetSpec(
            table_key(t.source, t.name), group_name=GROUP, kinds={"postgres"},
            description=(t.description or f"Replicated table {t.name}") +
            f" Landing mirror {t.source}.{t.name},"
            f" changelog cdc.{changelog_table_name(t.source, t.name)}.",
            metadata={"loaded_at": t.loaded_at or "none"},
            freshness_policy=policy))
    return out


def states(tidemark: TidemarkResource, keys: Iterable[dg.AssetKey] | None = None
           ) -> dict[dg.AssetKey, TableState]:
    """Read the state of the tables with the given keys (default: every replicated table)."""
    wanted = None if keys is None else set(keys)
    by_source: dict[str, list[TableSpec]] = {}
    for spec in table_specs():
        if wanted is None or table_key(spec.source, spec.name) in wanted:
            by_source.setdefault(spec.source, []).append(spec)
    urls = tidemark.urls()
    warn_s = tidemark.lag_thresholds()[0]
    out: dict[dg.AssetKey, TableState] = {}
    for source, specs in by_source.items():
        try:
            source_dsn = source_urls(tidemark, source)[1]
        except UnknownSourceError:  # contracts of a source not registered: nothing to read
            continue
        for name, state in read_states(source_dsn, urls.landing, source, specs,
                                       warn_s).items():
            out[table_key(source, name)] = state
    return out


@dg.multi_observable_source_asset(specs=_specs(), name="ingestion_tables", can_subset=True)
def ingestion_tables(context: dg.AssetExecutionContext, tidemark: TidemarkResource):
    """Observe the replicated tables (applied LSN, lag, dead letters in the metadata)."""
    for key, state in states(tidemark, context.selected_asset_keys).items():
        yield dg.ObserveResult(asset_key=key, metadata=state.metadata())
