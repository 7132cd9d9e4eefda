# Generated SQL: the inner view's SELECT is the engine's own, identifiers are quoted.
"""Live views over live views: ``FROM live.<inner>`` (resolution and change logs).

A view (the *outer* one) may read another deployed live view ``live.<inner>``. The outer view
treats the inner one as a base table whose rows are ``live.<inner>``'s rows, and whose writes
are the inner view's own maintenance:

* the outer view's statement-level log triggers are attached to the inner view's **state
  table** (``tidemark_state.<inner>__<hash8>``). The inner view's commit-time ``apply`` changes
  state rows; each of its statements fires them, and the transition rows (old and new state
  rows) are turned into ``live.<inner>`` rows by the inner view's own ``live.<inner>`` SELECT
  (over the transition table instead of the state table: old rows with sign -1, new with +1).
  A group whose output did not change logs a -row/+row pair that cancels out.
* the first logged row appends the outer view's marker, which queues its deferred ``apply``:
  PostgreSQL fires the deferred triggers queued by deferred triggers in the same commit, so the
  outer view is applied after the inner one, in dependency order, in the writer's transaction.
  It reads the inner view (its state, already up to date) as ``N_t`` and the logged rows as
  ``D_t``: the inclusion-exclusion of :mod:`streaming_views.deltas` holds unchanged, so the
  outer view stays exact. (When the outer view also reads a base table the transaction
  changed, its apply may run twice: once for the base table against the inner view as it
  was, once for the inner view's delta against the base table as it is — the sum is exact.)
* locks: an outer view is locked after its inner view at commit. To keep the engine's rule
  "a transaction takes the views' locks it needs in one order (their advisory keys,
  :mod:`streaming_views.lockorder`), all at once", a view's log functions also note its
  transitive readers (compiled into them, see :attr:`CompiledView.readers`) in the
  transaction-local ``tidemark.readers``, and the first apply locks pending views and readers
  together (:mod:`streaming_views.triggers`).

Deploy order, blue/green redeploys of an inner view and pruning: :mod:`streaming_views.stacked`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from streaming_views.astutil import q
from streaming_views.bounds import check_calls
from streaming_views.errors import UnsupportedViewError
from streaming_views.raising import finaliser_division
from streaming_views.readers import READERS
from streaming_views.resolve import TableInfo

if TYPE_CHECKING:
    from streaming_views.analyzer import TableRef
    from streaming_views.compiler import CompiledView

LIVE = "live"
STATE = "tidemark_state"


def live_table(conn: psycopg.Connection, index: int, table: TableRef, oid: int,
               relkind: str, refuse: Callable[..., UnsupportedViewError]) -> TableInfo | None:
    """The table info of ``live.<inner>`` read as a base table, or None when ``table`` is not
    in schema ``live``.

    During resolution the info keeps the view's OID (the columns the outer view reads are the
    view's); :func:`retarget` then points it at the inner view's state table.

    Raises:
        UnsupportedViewError: ``live.<inner>`` is not a healthy deployed live view, or it
            finalises aggregates that may raise an error.
    """
    if table.schema != LIVE:
        return None
    name = f"live.{table.name}"
    row = None
    if relkind == "v" and conn.execute("select to_regclass('tidemark.views')").fetchone()[0]:
        row = conn.execute("select definition, path, suffix from tidemark.views where name = %s "
                           "and target = 'embedded' and status = 'ok'", (table.name,)).fetchone()
    if row is None:
        raise refuse(f"{name} (not a healthy deployed live view)", table.node,
                     "a live view may read another live view only once that one is deployed "
                     "and follows its base tables.", f"deploy {name} first (its file in the "
                     "same views directory: deploy orders views by what they read), or repair "
                     "it with 'tidemark views deploy'.")
    from streaming_views.compiler import compile_view
    from streaming_views.viewfile import parse_view_text
    inner = compile_view(conn, parse_view_text(table.name, str(row[0]), Path(str(row[1]))))
    state_oid = conn.execute("select to_regclass(%s)::oid", (inner.state,)).fetchone()[0]
    if inner.suffix != row[2] or state_oid is None:
        raise refuse(f"{name} (deployed by another engine version)", table.node,
                     "its state is not the one this version maintains.",
                     f"redeploy {name} first ('tidemark views deploy').")
    if any(r.raises() for r in inner.rules):
        raise refuse(f"{name} (an aggregate that may raise when finalised)", table.node,
                     "its rows are computed in the writer's commit for this view, and an "
                     "interval sum of +infinity and -infinity raises there.",
                     f"read the base tables of {name} directly.")
    an = inner.analysis
    division = finaliser_division(an.outputs, an.having, grouped=bool(an.group)) \
        if an.kind == "aggregate" else None
    if division is not None:
        raise refuse(f"{name} (an aggregate that may raise when finalised: {division[0]})",
                     table.node, f"its rows are computed in the writer's commit for this view, "
                     f"and {division[0]} raises there (division by zero) when {division[1]} is "
                     f"0 — a failed write instead of a view that raises when read.",
                     f"read the base tables of {name} directly, or guard the divisor in "
                     f"{name}: nullif({division[1]}, 0).")
    return LiveTableInfo(index, table.schema, table.name, oid, relkind, inner=table.name,
                         state_name=inner.suffix, state_oid=int(state_oid),
                         select_sql=inner.state_select().replace(inner.state, "{rel}"),
                         column_exprs=state_expressions(inner), checks=check_calls(inner))


def state_expressions(inner: CompiledView) -> dict[str, str]:
    """Each column of ``live.<inner>`` as an expression over the bare columns of its state
    table (no alias): what an index on the state table is built on, so that a reader's lookup
    by that column, once PostgreSQL has expanded ``live.<inner>``, is an index scan."""
    types = dict(inner.state_columns())
    names = "|".join(re.escape(q(n)) + "|" + re.escape(n) for n, _ in sorted(
        types.items(), key=lambda c: -len(c[0])))
    column = re.compile(rf"\bs\.({names})(?![A-Za-z0-9_$])")
    found = {}
    for expr, (name, typ) in zip(inner.output_exprs, inner.outputs, strict=True):
        bare = column.sub(lambda m: m.group(1), expr)
        plain = column.fullmatch(expr)
        same = plain is not None and types.get(plain.group(1).strip('"')) == typ
        found[name] = bare if same else f"({bare})::{typ}"
    return found


@dataclass
class LiveTableInfo(TableInfo):
    """A live view read as a base table: its state table, and its SELECT over a relation
    ``{rel}`` with the state's columns."""

    inner: str = ""
    state_name: str = ""
    state_oid: int = 0
    select_sql: str = ""
    column_exprs: dict[str, str] = field(default_factory=dict)
    checks: tuple[str, ...] = ()  # reading live.<inner> raises: streaming_views.bounds


def is_live(table: Any) -> bool:
    """True for a live view read as a base table."""
    return bool(getattr(table, "inner", ""))


def retarget(tables: list[TableInfo]) -> list[TableInfo]:
    """Point every live view read as a table at its state table (triggers, catalog, health)."""
    return [replace(t, schema=STATE, name=t.state_name, oid=t.state_oid, relkind="r",
                    descendants=[]) if is_live(t) else t for t in tables]


def transition(table: Any, relation: str) -> str:
    """The relation a log trigger reads its rows from: the transition table itself, or for a
    live view the view's rows computed from the transition table of its state."""
    if not is_live(table):
        return relation
    return f"({table.select_sql.replace('{rel}', relation)})"


def used_record(table: Any) -> list[dict[str, Any]]:
    """The columns the catalog checks on the table (none on an inner view's state table: the
    inner view's deploy owns its shape; a redeploy replaces the state table, which the health
    check reports as re-created)."""
    return [] if is_live(table) else [c.record() for c in table.columns]


def inner_names(tables: list[Any]) -> list[str]:
    """The live views among ``tables`` (analysis table refs)."""
    return sorted({t.name for t in tables if t.schema == LIVE})


def upstream_tables(conn: psycopg.Connection, tables: list[Any]) -> list[str]:
    """Every base table (not state table) under the live views among ``tables``, transitively:
    locked first by a deploy of the outer view, so that no inner view's apply can run while
    the outer one is built."""
    seen: set[str] = set()
    todo = inner_names(tables)
    out: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        row = conn.execute("select base_tables, definition from tidemark.views where name = %s "
                           "and target = 'embedded'", (name,)).fetchone()
        if row is None:
            continue
        for table in row[0]:
            if not table.startswith(f"{STATE}."):
                out.add(table)
        from streaming_views.analyzer import analyze
        from streaming_views.viewfile import parse_view_text
        todo += inner_names(analyze(parse_view_text(name, row[1])).tables)
    return sorted(out)


def readers_sql(readers: tuple[str, ...]) -> str:
    """PL/pgSQL noting ``readers`` in ``tidemark.readers`` (empty for a view nobody reads)."""
    if not readers:
        return ""
    text = sql.Literal("".join(f" {r} " for r in readers)).as_string(None)
    return (f"\n  v_b := set_config('{READERS}', coalesce(current_setting('{READERS}', true), "
            f"'') || {text}, true);")
