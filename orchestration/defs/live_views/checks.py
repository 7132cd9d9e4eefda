"""Checks of the live views, one per view file.

Embedded engine: ``matches_query`` (the view equals its query, ``streaming_views.verify``);
Materialize: ``hydrated_and_current`` (hydrated, lag under ``TIDEMARK_MATERIALIZE_LAG_S``).
Embedded engine, also: ``freshness_slo`` (the view's freshness objective is kept,
``tidemark.slo.freshness``).
"""


import dagster as dg

from orchestration.defs.keys import view_key
from orchestration.defs.live_views.assets import view_files
from orchestration.defs.resources import TidemarkResource
from tidemark.settings import load_settings

EMBEDDED_CHECK = "matches_query"
SECONDS = "seconds"  # how long the comparison took: the schedule's budget reads it
MATERIALIZE_CHECK = "hydrated_and_current"
FRESHNESS_CHECK = "freshness_slo"


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
    import time

    from streaming_views import verify
    from streaming_views.errors import ViewNotFoundError

    out = []
    for name in names:
        started = time.monotonic()
        try:
            (r,) = verify(tidemark.urls().landing_app, name)
        except ViewNotFoundError:
            r = None
        seconds = round(time.monotonic() - started, 3)
        if r is None:
            out.append(dg.AssetCheckResult(
                asset_key=view_key(name), check_name=EMBEDDED_CHECK, passed=False,
                description=f"live.{name} is not deployed; materialise live/{name}."))
            continue
        rows = [dg.TableRecord({"side": side, "row": str(row)})
                for side, rows_ in (("live only", r.extra), ("query only", r.missing))
                for row in rows_[:20]]
        meta = {"live_only_rows": len(r.extra), "query_only_rows": len(r.missing),
                 SECONDS: seconds}
        if rows:
            meta["differences"] = dg.TableMetadataValue(rows, dg.TableSchema(
                columns=[dg.TableColumn("side"), dg.TableColumn("row")]))
        out.append(dg.AssetCheckResult(
            asset_key=view_key(name), check_name=EMBEDDED_CHECK, passed=r.ok, metadata=meta,
            description=f"live.{name} not checked this time: its comparison was interrupted by "
            f"{r.interrupted} (it gave way to ingestion); checked again at the next run."
            if r.interrupted else
            f"live view equals its query ({seconds:.1f} s)" if r.ok else
            f"live.{name} is broken: {r.problem}; materialise live/{name} (or run `tidemark "
            f"views deploy`) to repair it."
            if r.problem else
            f"live.{name} differs from its query: {len(r.extra)} rows only in the view, "
            f"{len(r.missing)} only in the query (the rows: `tidemark views verify {name}`); "
            f"materialise live/{name} (or run `tidemark views rebuild {name}`) to rebuild it "
            f"from its tables."))
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


def _freshness_specs() -> list[dg.AssetCheckSpec]:
    default = load_settings().freshness_objective
    return [dg.AssetCheckSpec(FRESHNESS_CHECK, asset=view_key(v.name), description=(
        f"Freshness objective {(v.freshness.text if v.freshness else default)} (source commit "
        f"→ visible in the view) over the last TIDEMARK_FRESHNESS_WINDOW_S seconds, and no "
        f"source silent for longer than a heartbeat plus the objective."))
        for v in view_files()]


def freshness_states(tidemark: TidemarkResource, names: list[str] | None = None) -> list:
    """``tidemark.slo.freshness.ViewFreshness`` of the named views (default: all)."""
    from tidemark.slo.freshness import evaluate as evaluate_freshness

    s = tidemark.settings()
    states = evaluate_freshness(tidemark.urls().landing_app, list(view_files()),
                                default_objective=s.freshness_objective,
                                window_s=s.freshness_window_s, heartbeat_s=s.heartbeat_s)
    return [f for f in states if names is None or f.view in names]


def freshness_metadata(f) -> dict:
    """The numbers of one view's freshness, as Dagster metadata (seconds; -1: no sample)."""
    meta: dict = {"objective": f.objective.text, "objective_declared": f.declared,
                  "sources": ", ".join(f.sources) or "-", "window_s": f.window_s,
                  "judged_samples": f.judged_samples,
                  f"{f.objective.label}_s_judged": _num(f.judged_s),
                  "silent_s": _num(f.silent_s)}
    for key, value in f.as_dict().items():
        if key.startswith(("p50_", "p95_", "p99_", "samples_")):
            meta[key if key.startswith("samples") else key.replace("_", "_s_", 1)] = _num(value)
    return meta


def _num(value) -> float:
    return -1.0 if value is None else float(value)


def freshness_evaluation(f) -> dg.AssetCheckEvaluation:
    """The ``freshness_slo`` outcome of one view (ERROR when missed, WARN when unknown or not
    deployed: a view file with no view has no freshness to miss)."""
    severity = dg.AssetCheckSeverity.WARN if f.state in ("unknown", "not deployed") else \
        dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckEvaluation(view_key(f.view), FRESHNESS_CHECK, passed=f.state == "ok",
                                   severity=severity, metadata=freshness_metadata(f),
                                   description=f"live.{f.view}: {f.reason}")


@dg.multi_asset_check(specs=_freshness_specs(), can_subset=True, name="freshness_checks")
def freshness_checks(context: dg.AssetCheckExecutionContext, tidemark: TidemarkResource):
    """Whether each selected view keeps its freshness objective (embedded engine)."""
    names = sorted({k.asset_key.path[-1] for k in context.selected_asset_check_keys})
    for f in freshness_states(tidemark, names):
        e = freshness_evaluation(f)
        yield dg.AssetCheckResult(asset_key=e.asset_key, check_name=e.check_name,
                                  passed=e.passed, severity=e.severity,
                                  description=e.description, metadata=e.metadata)
