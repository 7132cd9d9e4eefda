"""A lone one-row write whose delta puts at most one row in each group: applied without the
aggregate.

A transaction whose only logged row for a view is one INSERTed or DELETEd row of table ``j``
is applied from the apply trigger's ``NEW`` (:func:`from_new`; the transaction is noted
`` name/j! ``, :func:`single_token`). Its delta is that row joined to the other tables as they
are. When each other table meets at most one row — a single-table view, or a join whose every
other table is joined on all the columns of one of its unique keys to columns of table ``j`` —
the delta is at most one row, so each aggregate of the grouped upsert is its argument over that
row: the statement needs no ``GROUP BY``, no Agg and no Sort (the executor set-up of those is
the bulk of a one-row commit's apply, c37: ``ExecInitAgg`` 50.9k instructions, ``ExecInitSort``
17.7k).

The unique keys are learnt at deploy and guarded: :mod:`streaming_views.uniquekeys`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pglast import ast, parse_sql
from psycopg import sql

from streaming_views.astutil import deparse, substitute, walk
from streaming_views.expiry import is_timed
from streaming_views.layers import is_live
from streaming_views.uniquekeys import equated

if TYPE_CHECKING:
    from streaming_views.compiler import CompiledView

ROW_KINDS = {"count", "sum", "extreme", "bool"}  # rules whose delta reads sum/max/min only
AGGREGATES = {"sum", "max", "min"}


def from_new(cv: CompiledView, j: int) -> bool:
    """Whether a transaction whose only logged row for the view is one row of table ``j`` is
    applied from that row (the apply's ``NEW``, see
    :func:`streaming_views.apply._apply_changed`): the one-row INSERT or DELETE of a plain
    table (:func:`streaming_views.triggers.log_function`'s ``one``), in a view without outer
    joins and without a table called ``new`` or ``old`` (which would read as the trigger's
    records)."""
    return (cv.analysis.outer is None and not is_live(cv.resolved.tables[j])
            and not is_timed(cv, j) and all(t.ref.lower() not in ("new", "old") for t in cv.tables))


def single_text(cv: CompiledView, j: int) -> str:
    """The token `` name/j! ``: table ``j`` logged one row, the view's first in the
    transaction, and nothing was logged for the view since (any later log notes `` name/j ``)."""
    return f" {cv.name}/{j}! "


def single_token(cv: CompiledView, j: int) -> str:
    """:func:`single_text` as an SQL literal."""
    return sql.Literal(single_text(cv, j)).as_string(None)


def single_bit(cv: CompiledView) -> int:
    """The bit of ``v_m`` telling one row (:func:`single_token`), above the large delta's."""
    return 1 << (len(cv.tables) + 1)


def one_per_group(cv: CompiledView, j: int, *, timed: bool = False) -> bool:
    """Whether a lone row of table ``j`` meets at most one row of the view's join, and its
    aggregates are all sums, extremes or counts (so :func:`single_select` applies): a
    single-table view, or each other table joined on a recorded unique key
    (:func:`streaming_views.uniquekeys.mark_keys`) whose columns are all equated to columns of
    table ``j``. Only where the FROM is its base tables, each once (no self-join's second role,
    FROM subquery or function); not with outer joins, [NOT] EXISTS, UNION ALL branches, a
    temporal filter (unless ``timed``: :mod:`streaming_views.netpair`, whose rows pass the
    window alike) or a distinct aggregate."""
    an = cv.analysis
    if (an.outer is not None or an.branches or an.semijoins
            or (an.temporal is not None and not timed)
            or any(r.kind not in ROW_KINDS for r in cv.rules)):
        return False
    items = list(walk(list(an.from_clause), into_subqueries=False))
    if any(isinstance(n, ast.RangeSubselect | ast.RangeFunction | ast.RangeTableFunc)
           for n in items) or sum(isinstance(n, ast.RangeVar) for n in items) != len(cv.tables):
        return False
    tables = cv.resolved.tables
    for t, info in enumerate(tables):
        if t == j:
            continue
        keys = {c.key for c in info.columns if c.key}
        if not any(set(key) <= equated(an, tables, t, j) for key in keys):
            return False
    return True


class _NotOneRow(Exception):
    """An aggregate select :func:`single_select` cannot rewrite."""


def _argument(node: ast.Node, *, window: bool) -> ast.Node | None:
    """The argument standing for ``node`` over one row: of sum/max/min (a window of them when
    ``window``); ``node`` itself for a subquery (not visited); None for any other node."""
    if isinstance(node, ast.SubLink):
        return node
    if not isinstance(node, ast.FuncCall):
        return None
    name = node.funcname[-1].sval
    plain = not (node.agg_star or node.agg_distinct or node.agg_filter or node.agg_order
                 or node.agg_within_group or node.func_variadic)
    if (node.over is not None) != window or not plain or name not in AGGREGATES:
        if node.over is not None or node.agg_star or name in AGGREGATES | {"count", "avg"}:
            raise _NotOneRow(name)
        return None
    if not node.args or len(node.args) != 1:
        raise _NotOneRow(name)
    return substitute(node.args[0], lambda n: _argument(n, window=window))


def single_select(select: str) -> str | None:
    """The aggregate select of a delta (:meth:`CompiledView.aggregate_select`) over at most one
    flat row, without its aggregate: each ``sum``/``max``/``min`` (and each window of them,
    over the row's own partition) is its argument over that row (NULL as the aggregate gives
    it: every sum the rules write is coalesced and cast), no GROUP BY, ORDER BY nor HAVING
    (zero rows give zero groups either way). None when it has another aggregate."""
    stmt = parse_sql(select)[0].stmt
    try:
        stmt.targetList = substitute(stmt.targetList, lambda n: _argument(n, window=False))
        inner = stmt.fromClause[0]
        if isinstance(inner, ast.RangeSubselect) and inner.alias.aliasname == "__d" \
                and inner.subquery.fromClause \
                and isinstance(inner.subquery.fromClause[0], ast.RangeSubselect) \
                and inner.subquery.fromClause[0].alias.aliasname == "__w":
            inner.subquery.targetList = substitute(inner.subquery.targetList,
                                                   lambda n: _argument(n, window=True))
    except _NotOneRow:
        return None
    return ungrouped(stmt)


def ungrouped(stmt: ast.SelectStmt) -> str | None:
    """``stmt`` (a delta's aggregate select over at most one flat row, its aggregates
    rewritten) without GROUP BY, ORDER BY and HAVING — zero rows give zero groups either way —
    deparsed; None for a HAVING other than ``count(*) > 0``."""
    having = deparse(stmt.havingClause) if stmt.havingClause is not None else None
    if having not in (None, "count(*) > 0"):
        return None
    stmt.groupClause = stmt.sortClause = stmt.havingClause = None
    return deparse(stmt)
