"""Live views in Dagster: one asset ``live/<name>`` per view file, deployed on materialisation.

Materialising deploys the selected views on the configured target (``TIDEMARK_LIVE_TARGET``):
embedded — created, or rebuilt blue/green when the file changed, or rebuilt from the base tables
when it did not; Materialize — the generated SQL applied and swapped after hydration. Checks:
embedded — ``matches_query`` (the view equals its query, ``streaming_views.verify``);
Materialize — ``hydrated_and_current`` (hydrated, lag under ``materialize_lag_s``).
"""


import re
from functools import lru_cache

import dagster as dg

from orchestration.defs.ingestion import table_key
from orchestration.defs.resources import TidemarkResource, live_target_from_env

GROUP = "live_views"
EMBEDDED_CHECK = "matches_query"
MATERIALIZE_CHECK = "hydrated_and_current"
# Base tables of a view, read from its text without parsing it (pglast costs 0.3 s of load time;
# the deploy parses and checks the view for real). Views name tables as <source>.<table>.
_TABLE_RE = re.compile(r"\b(?:from|join)\s+([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)", re.I)
_COMMENT_RE = re.compile(r"--[^\n]*")


@lru_cache(maxsize=1)
def view_files() -> tuple:
    """The shipped view files (``streaming_views.load_views``)."""
    from streaming_views.viewfile import load_views

    return tuple(load_views())


def base_tables(text: str) -> list[tuple[str, str]]:
    """``(schema, table)`` pairs a view file reads, in order of first mention."""
    seen: dict[tuple[str, str], None] = {}
    for match in _TABLE_RE.finditer(_COMMENT_RE.sub(" ", text)):
        seen.setdefault((match.group(1).lower(), match.group(2).lower()), None)
    return list(seen)


def view_key(name: str) -> dg.AssetKey:
    """Asset key of a live view: ``live/<name>``."""
    return dg.AssetKey(["live", name])


def _specs() -> list[dg.AssetSpec]:
    return [dg.AssetSpec(view_key(v.name), group_name=GROUP, kinds={"postgres", "sql"},
                         description=v.description or f"live view {v.name}",
                         deps=[table_key(t, s) for s, t in base_tables(v.text)],
                         metadata={"file": str(v.path), "definition_hash": v.definition_hash},
                         code_version=v.definition_hash[:16])
            for v in view_files()]


def _check_specs(target: str) -> list[dg.AssetCheckSpec]:
    if target == "materialize":
        return [dg.AssetCheckSpec(MATERIALIZE_CHECK, asset=view_key(v.name), description=(
            "Materialize: the view is hydrated and its lag is under the threshold."))
            for v in view_files()]
    return [dg.AssetCheckSpec(EMBEDDED_CHECK, asset=view_key(v.name), description=(
        "The live view equals its query over the landed tables (EXCEPT ALL both ways)."))
        for v in view_files()]


def deploy_selected(tidemark: TidemarkResource, names: list[str]) -> dict[str, dict]:
    """Deploy the named views on the configured target; return metadata per view."""
    from streaming_views.deploy import deploy_embedded, rebuild
    from streaming_views.materialize import deploy_materialize

    views = [v for v in view_files() if v.name in names]
    out: dict[str, dict] = {}
    if tidemark.target() == "materialize":
        for r in deploy_materialize(tidemark.mz_url(), views):
            out[r.name] = {"action": r.action, "target": r.target, "hash": r.definition_hash}
        return out
    dsn = tidemark.urls().landing_app
    for r in deploy_embedded(dsn, views):
        action = r.action
        if action == "unchanged":
            rebuild(dsn, r.name)  # re-materialising means: state rebuilt from the base tables
            action = "rebuilt"
        out[r.name] = {"action": action, "target": r.target, "hash": r.definition_hash}
    from streaming_views.status import list_views

    for status in list_views(dsn):
        if status.name in out:
            out[status.name]["rows"] = status.rows
    return out


@dg.multi_asset(specs=_specs(), can_subset=True, name="live_views")
def live_views(context: dg.AssetExecutionContext, tidemark: TidemarkResource):
    """Deploy the selected live views (blue/green); their checks run after, in the same run."""
    names = [k.path[-1] for k in context.selected_asset_keys]
    deployed = deploy_selected(tidemark, names)
    for name in names:
        yield dg.MaterializeResult(asset_key=view_key(name), metadata=deployed[name])


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

    limit = tidemark.materialize_lag_s
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


@dg.multi_asset_check(specs=_check_specs(live_target_from_env()), can_subset=True,
                      name="live_view_checks")
def live_view_checks(context: dg.AssetCheckExecutionContext, tidemark: TidemarkResource):
    """The target's check of each selected view (runs after a deploy, or on its own)."""
    names = sorted({k.asset_key.path[-1] for k in context.selected_asset_check_keys})
    yield from evaluate(tidemark, names)


defs = dg.Definitions(assets=[live_views], asset_checks=[live_view_checks])
