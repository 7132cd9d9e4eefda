"""Temporal filters (``mz_now()`` in WHERE, and ``@retention``) on the embedded engine: check.

A temporal filter keeps a row of one base table (the *timed table*) while the clock ``t`` is
inside the row's validity interval::

    where mz_now() >= o.placed_at                              -- admitted at placed_at
      and mz_now() <= o.placed_at + interval '5 minutes'       -- expired 5 minutes later

Materialize's forms are accepted: ``mz_now()`` alone on one side of ``=``, ``<``, ``<=``,
``>``, ``>=`` or ``BETWEEN ... AND ...``, compared with an expression of the timed table's
columns (timestamp, timestamptz or date), in top-level ``AND`` conjuncts of WHERE. ``@retention:
<column> <n> <unit>s`` is the conjunct ``mz_now() <= <column> + interval '<n> <unit>s'``.
Everything else with ``mz_now()`` is refused with a reason: in the SELECT list, HAVING, GROUP BY,
a join condition, an aggregate FILTER, under OR/NOT or inside another expression, arithmetic on
``mz_now()``, ``<>``, bounds over two tables, and hopping windows.

The view is then maintained straight from the timed table's writes (see
:mod:`streaming_views.expiry`): its FROM reads the timed table through its *window* (a subquery
of the timed table's rows valid at the clock's time, written into the generated SQL where the
FROM item names ``tidemark_state.<view>__<hash8>__tv``), its change-log triggers sit on the
timed table itself and log only the rows valid at the clock's time, and the tick
(``tidemark.live_tick()``) logs the rows crossing the window's edges (expired: -1, admitted: +1),
found through an index on the bound's column, into the same change log and maintenance. A write
pays one trigger level, like any view; a tick costs O(rows expiring or admitted).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pglast
from pglast import ast, enums

from streaming_views.astutil import deparse, substitute, walk

TEMPORAL_SCHEMA = "tidemark_state"
OPS = {"<": ("until", True), "<=": ("until", False), ">": ("from", True),
       ">=": ("from", False), "=": ("both", False)}
FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "="}
FORM = ("write it as a conjunct of WHERE with mz_now() alone on one side, e.g. "
        "'where mz_now() <= e.ts + interval '5 minutes' and mz_now() >= e.ts'.")


@dataclass(frozen=True)
class Bound:
    """One side of a row's validity interval.

    Attributes:
        kind: ``from`` (admitted when the clock reaches it) or ``until`` (expired after it).
        expr: the bounding expression, over the timed table's columns.
        strict: ``<``/``>`` (the bound itself is outside the interval).
    """

    kind: str
    expr: Any
    strict: bool


@dataclass(frozen=True)
class Temporal:
    """The temporal filter of a view.

    Attributes:
        schema, name, ref: the timed table and the name its columns use in the query.
        bounds: the interval's bounds (at least one).
        visible: the name the timed table's FROM item takes in the generated SQL, where it is
            replaced by the window (:func:`streaming_views.expiry.inline_window`).
        guard: the condition of rows whose bounds cannot raise (:mod:`streaming_views.bounds`),
            set by the compiler; None: the bounds are used as they are.
        owner: the suffix of the view (its ``<suffix>__tm_*`` functions), set with ``guard``.
        columns: the timed table's columns the bounds read, set with ``guard``.
        window_range: a condition on the bounds' columns that every row valid at the clock's
            time meets (:func:`streaming_views.expiry.window_range`), set with ``guard``; the
            window adds it so that its reads take the expiry index. None: no invertible bound.
    """

    schema: str
    name: str
    ref: str
    bounds: tuple[Bound, ...]
    visible: str
    guard: str | None = None
    owner: str | None = None
    columns: tuple[str, ...] = ()
    window_range: str | None = None

    @property
    def qualified(self) -> str:
        """The timed table as ``schema.name`` (unquoted)."""
        return f"{self.schema}.{self.name}"


def is_mz_now(node: Any) -> bool:
    """True for a call of ``mz_now()`` (possibly cast)."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return isinstance(node, ast.FuncCall) and node.funcname[-1].sval.lower() == "mz_now"


def _calls(node: Any) -> list[ast.FuncCall]:
    return [n for n in walk(node) if isinstance(n, ast.FuncCall) and is_mz_now(n)]


def conjuncts(where: Any) -> list[Any]:
    """The top-level AND conjuncts of a condition."""
    if where is None:
        return []
    if isinstance(where, ast.BoolExpr) and where.boolop == enums.BoolExprType.AND_EXPR:
        return [c for arg in where.args for c in conjuncts(arg)]
    return [where]


def _and(parts: list[Any]) -> Any:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=tuple(parts))


def _op(node: ast.A_Expr) -> str:
    return node.name[-1].sval


def _bounds_of(node: Any, chk: Any) -> list[Bound] | None:
    """The bounds a conjunct sets, None if it has no ``mz_now()``; refuses bad forms."""
    if not _calls(node):
        return None
    if isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP \
            and _op(node) in OPS:
        op, mine, other = _op(node), node.lexpr, node.rexpr
        if not is_mz_now(mine):
            op, mine, other = FLIP[op], node.rexpr, node.lexpr
        if not is_mz_now(mine):
            raise chk.refuse("arithmetic on mz_now()", node, "mz_now() must stand alone on one "
                             "side of the comparison (Materialize refuses this form too).",
                             "move the arithmetic to the other side: 'mz_now() <= e.ts + "
                             "interval '5 minutes'' instead of 'mz_now() - interval '5 minutes'"
                             " <= e.ts'.")
        if _calls(other):
            raise chk.refuse("mz_now() on both sides", node, "a temporal filter compares "
                             "mz_now() with an expression of a table's columns.", FORM)
        kind, strict = OPS[op]
        if kind == "both":
            return [Bound("from", other, False), Bound("until", other, False)]
        return [Bound(kind, other, strict)]
    if isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_BETWEEN \
            and is_mz_now(node.lexpr) and not _calls(node.rexpr):
        low, high = node.rexpr
        return [Bound("from", low, False), Bound("until", high, False)]
    if isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP \
            and _op(node) in {"<>", "!="}:
        raise chk.refuse("mz_now() <>", node, "a row valid at every time but one has no "
                         "expiry (Materialize refuses '<>' with mz_now() too).", FORM)
    if isinstance(node, ast.BoolExpr):
        which = {enums.BoolExprType.OR_EXPR: "OR", enums.BoolExprType.NOT_EXPR: "NOT"}
        name = which.get(node.boolop, "a boolean expression")
        raise chk.refuse(f"mz_now() under {name}", node, "a temporal filter must be a "
                         "conjunct of WHERE: each row then has one validity interval "
                         "(Materialize refuses OR with mz_now() too).", "split the view in "
                         "two (one per disjunct), or " + FORM)
    raise chk.refuse("mz_now() inside an expression", node, "only a comparison of mz_now() "
                     "with an expression, as a conjunct of WHERE, is a temporal filter.", FORM)


def _elsewhere(stmt: ast.SelectStmt, chk: Any) -> None:
    """Refuse ``mz_now()`` anywhere but the top-level WHERE conjuncts."""
    places = [("the SELECT list", [t.val for t in stmt.targetList],
               "mz_now() is not a value a view can hold: it changes every millisecond.",
               "filter with it in WHERE, or read the clock when you query the view.")]
    places.append(("HAVING", [stmt.havingClause], "the embedded engine filters rows by time, "
                   "not groups.", "move the comparison into WHERE on the row's time column."))
    places.append(("GROUP BY", list(stmt.groupClause or ()), "a group key cannot move with "
                   "time.", "group by the event time (date_bin) and filter in WHERE."))
    places.append(("a join condition", [j.quals for j in walk(stmt.fromClause)
                                        if isinstance(j, ast.JoinExpr)],
                   "a temporal filter belongs to WHERE.", "move it into WHERE."))
    places.append(("a subquery in FROM", [s for s in walk(stmt.fromClause)
                                          if isinstance(s, ast.RangeSubselect)],
                   "temporal filters inside UNION ALL branches are not maintained yet.",
                   "put one view per branch, each with its temporal filter."))
    for where, roots, reason, rewrite in places:
        for root in roots:
            found = _calls(root) if root is not None else []
            if found:
                if where == "the SELECT list" and any(
                        isinstance(n, ast.FuncCall) and n.agg_filter is not None
                        and _calls(n.agg_filter) for n in walk(root)):
                    where, reason = "an aggregate FILTER", "Materialize refuses it too."
                    rewrite = "filter rows in WHERE."
                if any(isinstance(n, ast.RangeFunction) for n in walk(stmt.fromClause)):
                    where = "a hopping window (generate_series over window starts)"
                raise chk.refuse(f"mz_now() in {where}", found[0], reason, rewrite)
    for node in walk(stmt.whereClause):
        if isinstance(node, ast.SubLink) and _calls(node):
            raise chk.refuse("mz_now() in a subquery", node, "not maintained.", FORM)


def _table_of(expr: Any, tables: list[Any], chk: Any, what: Any) -> Any:
    """The one table whose columns ``expr`` reads; refuse otherwise."""
    refs = [n for n in walk(expr) if isinstance(n, ast.ColumnRef)]
    found = []
    for ref in refs:
        names = [f.sval for f in ref.fields if isinstance(f, ast.String)]
        if len(names) == 2:
            match = [t for t in tables if t.ref == names[0]]
        elif len(tables) == 1:
            match = tables
        else:
            raise chk.refuse(f"unqualified column {names[-1]} in a temporal filter", ref,
                             "with several tables the bound must name its table.",
                             f"write <alias>.{names[-1]}.")
        for t in match:
            if t not in found:
                found.append(t)
    if not found:
        raise chk.refuse("temporal filter without a column", what, "mz_now() must be "
                         "compared with a row's time (a constant bound expires no row).",
                         "compare with a column: mz_now() <= e.ts + interval '5 minutes'.")
    if len(found) > 1:
        raise chk.refuse("temporal filter over two tables", what, "a row's validity interval "
                         "must come from one table's columns.", "bound each table's time "
                         "column separately: mz_now() <= a.ts + ... and mz_now() <= b.ts + ...")
    return found[0]


def _retention_bound(view: Any) -> tuple[Bound, Any] | None:
    if view.retention is None:
        return None
    expr = pglast.parse_sql(f"select {view.retention.column} + interval "
                            f"'{view.retention.interval}'")[0].stmt.targetList[0].val
    return Bound("until", expr, False), expr


def extract(view: Any, stmt: ast.SelectStmt, tables: list[Any], chk: Any
            ) -> tuple[Any, list[Any], tuple[Any, ...], Temporal | None]:
    """Take the temporal filter (and ``@retention``) out of ``stmt``'s WHERE.

    Returns:
        (WHERE without the temporal conjuncts, the tables (the timed table kept: its triggers
        and the DDL guard follow it), the FROM list with the timed table read through its
        window, the :class:`Temporal` or None).

    Raises:
        UnsupportedViewError: through ``chk.refuse``, for a form that is not maintained.
    """
    from_clause = tuple(stmt.fromClause or ())
    _elsewhere(stmt, chk)
    kept, bounds, timed = [], [], None
    for part in conjuncts(stmt.whereClause):
        found = _bounds_of(part, chk)
        if found is None:
            kept.append(part)
            continue
        for bound in found:
            table = _table_of(bound.expr, tables, chk, part)
            if timed is not None and table is not timed:
                raise chk.refuse("temporal filter over two tables", part, "every bound must "
                                 "come from the same table's columns (one expiry per row).",
                                 "keep the time bounds on one table.")
            timed = table
            bounds.append(bound)
    retention = _retention_bound(view)
    if retention is not None:
        if any(isinstance(i, ast.RangeSubselect) for i in from_clause):
            raise chk.refuse("@retention on a UNION ALL view", None, "temporal filters inside "
                             "UNION ALL branches are not maintained yet.", "put one view per "
                             "branch.", keyword="from")
        table = _table_of(retention[1], tables, chk, None)
        if timed is not None and table is not timed:
            raise chk.refuse("@retention and mz_now() on two tables", None, "every bound must "
                             "come from the same table's columns.", "keep the time bounds on "
                             "one table.", keyword="where")
        timed = table
        bounds.append(retention[0])
    if timed is None:
        return stmt.whereClause, tables, from_clause, None
    stem = f"{view.name}__{view.definition_hash[:8]}"
    temporal = Temporal(timed.schema, timed.name, timed.ref, tuple(bounds), f"{stem}__tv")
    return _and(kept), tables, from_clause, temporal


@contextmanager
def bounds_in_where(an: Any) -> Iterator[None]:
    """While resolving: the analysis's WHERE also reads the bounds' columns (``<bound> IS NOT
    NULL``, no clock), so they are logged and followed by the DDL guard like any column the
    view reads."""
    t, where = an.temporal, an.where
    if t is not None:
        an.where = _and([*conjuncts(where), *(ast.NullTest(arg=b.expr, nulltesttype=enums.
                                                           NullTestType.IS_NOT_NULL)
                                              for b in t.bounds)])
    try:
        yield
    finally:
        an.where = where


def read_through_window(an: Any) -> None:
    """After resolving: the FROM node of the timed table reads its window instead (the
    build, recompute and the other tables' deltas then see only the rows valid at the clock's
    time; its own delta comes from its change log)."""
    t = an.temporal
    if t is None:
        return
    for table in an.tables:
        if table.ref == t.ref and (table.schema, table.name) == (t.schema, t.name):
            node = table.node  # swapped in place: the engine finds tables by their FROM node
            node.schemaname, node.relname = TEMPORAL_SCHEMA, t.visible
            node.alias = ast.Alias(aliasname=t.ref)


# What the clock's time stands for in a cached oracle query (a string no timestamp's text holds).
_CLOCK = "tidemark-oracle-clock"


def oracle_query(definition: str, at: datetime) -> str:
    """The view's query with ``mz_now()`` (and ``@retention``) evaluated at ``at``: what the
    live view must equal after the tick of time ``at``."""
    clock = f"'{at.isoformat()}'"
    if _CLOCK in definition:  # the placeholder could stand for the view's own text
        return _oracle_query(definition, clock)
    return _oracle_template(definition).replace(f"'{_CLOCK}'", clock)


@functools.lru_cache(maxsize=256)
def _oracle_template(definition: str) -> str:
    """:func:`oracle_query` at the placeholder time, parsed and deparsed once per definition
    (a verification reads a view's query at every tick)."""
    return _oracle_query(definition, f"'{_CLOCK}'")


def _oracle_query(definition: str, at: str) -> str:
    """:func:`oracle_query` with the clock's time as the string literal ``at``."""
    from streaming_views.viewfile import parse_view_text
    view = parse_view_text("v", definition)
    stmt = pglast.parse_sql(definition)[0].stmt
    clock = f"{at}::timestamptz"
    now = pglast.parse_sql(f"select {clock}")[0].stmt.targetList[0].val
    stmt = substitute(stmt, lambda n: now if isinstance(n, ast.FuncCall) and is_mz_now(n)
                      else None)
    retention = _retention_bound(view)
    if retention is not None:
        bound = pglast.parse_sql(f"select {clock} <= {deparse(retention[1])}"
                                 )[0].stmt.targetList[0].val
        stmt.whereClause = _and([*conjuncts(stmt.whereClause), bound])
    return deparse(stmt)


def probe_text(text: str) -> str:
    """``text`` with each ``mz_now()`` call replaced by ``now()`` padded to the same length
    (offsets kept for error positions): for describing the view's columns."""
    return re.sub(r"(?i)\bmz_now\s*\(\s*\)", lambda m: "now()".ljust(len(m.group(0))), text)


def has_temporal(definition: str) -> bool:
    """True when a view definition has a temporal filter or ``@retention``."""
    return "mz_now" in definition.lower() or "@retention" in definition
