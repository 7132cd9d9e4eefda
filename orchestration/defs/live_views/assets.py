"""Live views in Dagster: one asset ``live/<name>`` per view file, deployed on materialisation.

Materialising deploys the selected views on the configured target (``TIDEMARK_LIVE_TARGET``):
embedded — created, or rebuilt blue/green when the file changed, or rebuilt from the base tables
when it did not; Materialize — the generated SQL applied and swapped after hydration.
"""


import re
from functools import lru_cache

import dagster as dg

from orchestration.defs.keys import table_key, view_key
from orchestration.defs.resources import TidemarkResource

GROUP = "live_views"


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


def _specs() -> list[dg.AssetSpec]:
    return [dg.AssetSpec(view_key(v.name), group_name=GROUP, kinds={"postgres", "sql"},
                         description=v.description or f"live view {v.name}",
                         deps=[table_key(t, s) for s, t in base_tables(v.text)],
                         metadata={"file": str(v.path), "definition_hash": v.definition_hash},
                         code_version=v.definition_hash[:16])
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
