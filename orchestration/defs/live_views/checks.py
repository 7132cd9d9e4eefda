"""Checks of the live views, one per view file.

Embedded engine: ``matches_query`` (the view equals its query, ``streaming_views.verify``);
Materialize: ``hydrated_and_current`` (hydrated, lag under ``TIDEMARK_MATERIALIZE_LAG_S``).
"""


import dagster as dg

from orchestration.defs.keys import view_key
from orchestration.defs.live_views.assets import view_files
from orchestration.defs.resources import TidemarkResource
from tidemark.settings import load_settings

EMBEDDED_CHECK = "matches_query"
MATERIALIZE_CHECK = "hydrated_and_current"


def _check_specs(target: str) -> list[dg.AssetCheckSpec]:
    if target == "materialize":
        return [dg.AssetCheckSpec(MATERIALIZE_CHECK, asset=view_key(v.name), description=(
            "Materialize: the view is hydrated and its lag is under the threshold."))
            for v in view_files()]
    return [dg.AssetCheckSpec(EMBEDDED_CHECK, asset=view_key(v.name), description=(
        "The live view equals its query over the landed tables (EXCEPT ALL both ways)."))
        for v in view_files()]


def evaluate(tidemark: TidemarkResource, names: list[str]) -> list[dg.AssetCheckResult]:
    """The target's check for each named view."""
    if tidemark.target() == "materialize":
        return [materialize_result(tidemark, n) for n in names]
    from streaming_views import verify

    out = []
    results = {r.name: r for r in verify(tidemark.urls().landing_app)}
    for name in names:
        r = results.get(name)
        if r is None:
            out.append(dg.AssetCheckResult(
                asset_key=view_key(name), check_name=EMBEDDED_CHECK, passed=False,
                description=f"live.{name} is not deployed; materialise live/{name}."))
            continue
        rows = [dg.TableRecord({"side": side, "row": str(row)})
                for side, rows_ in (("live only", r.extra), ("query only", r.missing))
                for row in rows_[:20]]
        meta = {"live_only_rows": len(r.extra), "query_only_rows": len(r.missing)}
        if rows:
            meta["differences"] = dg.TableMetadataValue(rows, dg.TableSchema(
                columns=[dg.TableColumn("side"), dg.TableColumn("row")]))
        out.append(dg.AssetCheckResult(
            asset_key=view_key(name), check_name=EMBEDDED_CHECK, passed=r.ok, metadata=meta,
            description="live view equals its query" if r.ok else
            f"live.{name} is broken: {r.problem}; materialise live/{name} to rebuild it."
            if r.problem else
            f"live.{name} differs from its query: {len(r.extra)} rows only in the view, "
            f"{len(r.missing)} only in the query; materialise live/{name} to rebuild it."))
    return out


def materialize_result(tidemark: TidemarkResource, name: str) -> dg.AssetCheckResult:
    """Hydration and lag of ``live.<name>`` on Materialize."""
    import psycopg

    limit = tidemark.mz_lag_limit()
    with psycopg.connect(tidemark.mz_url(), autocommit=True) as conn:
        row = conn.execute(
            "select bool_and(h.hydrated), max(extract(epoch from l.lag)) from mz_catalog.mz_objects"
            " o join mz_catalog.mz_schemas s on s.id = o.schema_id left join"
            " mz_internal.mz_hydration_statuses h on h.object_id = o.id left join"
            " mz_internal.mz_wallclock_global_lag l on l.object_id = o.id"
            " where s.name = 'live' and o.name = %s", (name,)).fetchone()
    hydrated, lag = bool(row[0]), None if row[1] is None else float(row[1])
    passed = hydrated and lag is not None and lag <= limit
    return dg.AssetCheckResult(
        asset_key=view_key(name), check_name=MATERIALIZE_CHECK, passed=passed,
        metadata={"hydrated": hydrated, "lag_s": lag if lag is not None else -1.0,
                  "max_lag_s": limit},
        description=("hydrated, lag within limit" if passed else
                     f"live.{name}: hydrated={hydrated}, lag={lag} s (limit {limit} s)"))


@dg.multi_asset_check(specs=_check_specs(load_settings().live_target), can_subset=True,
                      name="live_view_checks")
def live_view_checks(context: dg.AssetCheckExecutionContext, tidemark: TidemarkResource):
    """The target's check of each selected view (runs after a deploy, or on its own)."""
    names = sorted({k.asset_key.path[-1] for k in context.selected_asset_check_keys})
    yield from evaluate(tidemark, names)
