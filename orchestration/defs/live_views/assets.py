"""Live views in Dagster: one asset ``live/<name>`` per view file, deployed on materialisation.

The view files are read from ``TIDEMARK_VIEWS_DIR`` (default: the shipped views) when the
definitions load, so a file added there is an asset (with its check) at the next load. A view's
upstream tables are those the ``streaming_views`` analyzer finds in its FROM clauses; a view the
analyzer refuses is still an asset (its materialisation fails with the analyzer's message).

Materialising deploys the selected views on the configured target (``TIDEMARK_LIVE_TARGET``):
embedded — created, or rebuilt blue/green when the file changed, or rebuilt from the base tables
when it did not; Materialize — the generated SQL applied and swapped after hydration.
"""

from functools import lru_cache

import dagster as dg

from orchestration.defs.keys import table_key, view_key
from orchestration.defs.resources import TidemarkResource
from tidemark.settings import load_settings

GROUP = "live_views"


@lru_cache(maxsize=1)
def view_files() -> tuple:
    """The view files of the views directory (``streaming_views.load_views``)."""
    from streaming_views.viewfile import load_views

    return tuple(load_views(load_settings().views_dir))


def base_tables(view, target: str | None = None) -> tuple[list[tuple[str, str]], str | None]:
    """``(schema, table)`` pairs a view reads, and the target's refusal.

    Args:
        view: a ``streaming_views.ViewFile``.
        target: ``embedded`` (the analyzer) or ``materialize`` (``streaming_views.mzcheck``:
            what Materialize supports); default: ``TIDEMARK_LIVE_TARGET``.

    Returns:
        The tables (empty when refused) and None, or the refusal message.
    """
    from streaming_views.analyzer import analyze
    from streaming_views.errors import StreamingViewsError
    from streaming_views.mzcheck import check_materialize

    try:
        if (target or load_settings().live_target) == "materialize":
            return list(check_materialize(view).tables), None
        analysis = analyze(view)
    except StreamingViewsError as exc:
        return [], str(exc)
    seen: dict[tuple[str, str], None] = {}
    for ref in analysis.source_tables:
        seen.setdefault((ref.schema, ref.name), None)
    return list(seen), None


def _specs() -> list[dg.AssetSpec]:
    out = []
    for v in view_files():
        tables, refused = base_tables(v)
        description = v.description or f"live view {v.name}"
        if refused:
            description += f" (not deployable: {refused})"
        out.append(dg.AssetSpec(view_key(v.name), group_name=GROUP, kinds={"postgres", "sql"},
                                description=description,
                                deps=[view_key(t) if s == "live" else table_key(s, t)
                                      for s, t in tables],  # live.<x>: the view x
                                metadata={"file": str(v.path),
                                          "definition_hash": v.definition_hash},
                                code_version=v.definition_hash[:16]))
    return out


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
