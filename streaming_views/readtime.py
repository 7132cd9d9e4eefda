"""Equivalent rewrites for what the engine cannot keep but a reader can compute.

Window functions, ordered-set and other aggregates without an incremental rule (``array_agg``,
``string_agg``, ``percentile_cont``, ``stddev``...), ``DISTINCT ON``, ``GROUPING SETS``,
``ORDER BY`` and ``LIMIT`` are all computed *after* the rows are read. Such a query is equal to
two steps: a live view of the rows it reads (its FROM and WHERE, with exactly the columns and
group-key values the rest needs, duplicates kept), and the rest of the query run over
``live.<name>`` when it is read. :func:`split` writes both, from the user's own query, so a
refusal's ``Rewrite:`` is an equivalent query rather than a hint.
"""

from __future__ import annotations

import copy
from typing import Any

from pglast import ast

from streaming_views.astutil import deparse, substitute, walk

AGGREGATE_NAMES = {"count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every",
                   "string_agg", "array_agg", "json_agg", "jsonb_agg", "json_object_agg",
                   "jsonb_object_agg", "xmlagg", "stddev", "stddev_pop", "stddev_samp",
                   "variance", "var_pop", "var_samp", "percentile_cont", "percentile_disc",
                   "mode", "bit_and", "bit_or", "bit_xor", "corr", "covar_pop", "covar_samp",
                   "regr_count", "any_value", "range_agg", "range_intersect_agg", "grouping"}


def _keys(stmt: ast.SelectStmt) -> list[Any]:
    """The GROUP BY expressions, positions and output names resolved (none: no GROUP BY)."""
    aliases = {t.name: t.val for t in stmt.targetList if t.name}
    keys = []
    for item in stmt.groupClause or ():
        if isinstance(item, ast.A_Const) and isinstance(item.val, ast.Integer):
            if 1 <= item.val.ival <= len(stmt.targetList):
                keys.append(stmt.targetList[item.val.ival - 1].val)
        elif isinstance(item, ast.ColumnRef) and len(item.fields) == 1 \
                and isinstance(item.fields[0], ast.String) and item.fields[0].sval in aliases:
            keys.append(aliases[item.fields[0].sval])
        elif isinstance(item, ast.GroupingSet):
            keys += [k for k in walk(item.content) if isinstance(k, ast.ColumnRef)]
        else:
            keys.append(item)
    return keys


def _name_of(node: Any) -> str | None:
    if isinstance(node, ast.ColumnRef) and isinstance(node.fields[-1], ast.String):
        return node.fields[-1].sval
    return None


class _Columns:
    """The columns of the row view: a unique name per distinct expression text."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str, Any]] = {}

    def add(self, node: Any, name: str | None) -> None:
        text = deparse(node)
        if text in self.items:
            return
        taken = {n for n, _ in self.items.values()}
        base = name if name and not name.startswith("__") else f"c{len(self.items) + 1}"
        if base in taken and isinstance(node, ast.ColumnRef) and len(node.fields) == 2:
            base = f"{node.fields[0].sval}_{base}"
        unique, n = base, 2
        while unique in taken:
            unique, n = f"{base}_{n}", n + 1
        self.items[text] = (unique, node)

    def swap(self, node: ast.Node) -> ast.Node | None:
        entry = self.items.get(deparse(node)) if _is_expression(node) else None
        if entry is None:
            return None
        return ast.ColumnRef(fields=(ast.String(sval=entry[0]),))


def _is_expression(node: Any) -> bool:
    return isinstance(node, ast.Node) and not isinstance(
        node, ast.SubLink | ast.String | ast.Integer | ast.Float | ast.Boolean | ast.SortBy
        | ast.WindowDef | ast.ResTarget | ast.TypeName | ast.A_Star | ast.GroupingSet)


def _computed_later(node: Any) -> bool:
    """Whether ``node`` holds what only the whole set of rows gives: an aggregate or a window
    function (``count(*)``, ``rank() over (...)``), or an output's alias."""
    for n in walk(node):
        if isinstance(n, ast.FuncCall) and (
                n.over is not None or n.agg_star or n.agg_distinct or n.agg_order
                or n.agg_filter is not None or n.agg_within_group
                or n.funcname[-1].sval.lower() in AGGREGATE_NAMES):
            return True
    return False


def _carry(nodes: Any, cols: _Columns, aliases: set[str], outputs: dict[str, Any]) -> None:
    """Add to the row view the largest expressions of ``nodes`` over the rows alone (neither
    an aggregate nor a window in them), so they are computed by the view under its pinned
    session settings (``t.ts::date`` means the same for every reader)."""
    if isinstance(nodes, list | tuple):
        for node in nodes:
            _carry(node, cols, aliases, outputs)
        return
    if not isinstance(nodes, ast.Node):
        return
    if _is_expression(nodes) and deparse(nodes) in cols.items:
        return  # a group key
    refs = [n for n in walk(nodes) if isinstance(n, ast.ColumnRef)
            and not (len(n.fields) == 1 and _name_of(n) in aliases)]
    if _is_expression(nodes) and refs and not _computed_later(nodes):
        cols.add(nodes, outputs.get(deparse(nodes)) if not isinstance(nodes, ast.ColumnRef)
                 else _name_of(nodes))
        return
    for name in type(nodes).__slots__:
        _carry(getattr(nodes, name, None), cols, aliases, outputs)


def split(stmt: ast.SelectStmt, name: str) -> tuple[str, str] | None:
    """Split ``stmt`` into (the row view's SELECT, the query to run over ``live.<name>``).

    The row view keeps FROM and WHERE and selects each group key once and every column the
    rest of the query reads; the read query is ``stmt`` over ``live.<name>`` with those
    expressions replaced by the row view's columns. None when the statement has no FROM or its
    select list cannot be carried over (a subquery in it).
    """
    if not stmt.fromClause or any(isinstance(n, ast.SubLink) for n in walk(
            [t.val for t in stmt.targetList] + [stmt.havingClause])):
        return None
    cols = _Columns()
    outputs = {deparse(t.val): t.name or _name_of(t.val) for t in stmt.targetList}
    for key in _keys(stmt):
        cols.add(key, outputs.get(deparse(key)) or _name_of(key))
    aliases = {t.name for t in stmt.targetList if t.name}
    later = [t.val for t in stmt.targetList] + [stmt.havingClause, stmt.sortClause,
                                                 stmt.distinctClause, stmt.windowClause]
    _carry([n for n in later if n is not None], cols, aliases, outputs)
    rows = ast.SelectStmt(targetList=tuple(_target(v, n) for n, v in cols.items.values()),
                          fromClause=stmt.fromClause, whereClause=stmt.whereClause)
    read = _over_live(stmt, name)
    read.targetList = tuple(_target(substitute(t.val, cols.swap), t.name or _name_of(t.val))
                            for t in stmt.targetList)
    for attr in ("havingClause", "sortClause", "distinctClause", "windowClause", "groupClause"):
        value = getattr(stmt, attr)
        if value is not None:
            setattr(read, attr, substitute(value, cols.swap))
    return deparse(rows), deparse(read)


def _target(val: Any, name: str | None) -> ast.ResTarget:
    """``val AS name``, without the alias when ``val`` is a column of that name."""
    return ast.ResTarget(name=None if name == _name_of(val) else name, val=val)


def _over_live(stmt: ast.SelectStmt, name: str) -> ast.SelectStmt:
    read = copy.deepcopy(stmt)
    read.fromClause = (ast.RangeVar(schemaname="live", relname=name, inh=True,
                                    relpersistence="p"),)
    read.whereClause = None
    read.lockingClause = None
    return read


def sort_split(stmt: ast.SelectStmt, name: str) -> tuple[str, str] | None:
    """ORDER BY/LIMIT/OFFSET over outputs: (the query without them, the sort over
    ``live.<name>``); None when a sort key is not an output column."""
    names = [t.name or _name_of(t.val) for t in stmt.targetList]
    texts = [deparse(t.val) for t in stmt.targetList]
    by = []
    for sort in stmt.sortClause or ():
        node = sort.node
        if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer) \
                and 1 <= node.val.ival <= len(names):
            column = names[node.val.ival - 1]
        elif _name_of(node) in names and len(node.fields) == 1:
            column = _name_of(node)
        elif deparse(node) in texts:
            column = names[texts.index(deparse(node))]
        else:
            return None
        if column is None:
            return None
        by.append(ast.SortBy(node=ast.ColumnRef(fields=(ast.String(sval=column),)),
                             sortby_dir=sort.sortby_dir, sortby_nulls=sort.sortby_nulls))
    rows = copy.deepcopy(stmt)
    rows.sortClause = rows.limitCount = rows.limitOffset = None
    rows.limitOption = ast.SelectStmt().limitOption
    read = ast.SelectStmt(targetList=tuple(
        ast.ResTarget(val=ast.ColumnRef(fields=(ast.String(sval=n),))) for n in names),
        fromClause=_over_live(stmt, name).fromClause, sortClause=tuple(by) or None,
        limitCount=stmt.limitCount, limitOffset=stmt.limitOffset,
        limitOption=stmt.limitOption)
    return deparse(rows), deparse(read)


def rewrite_text(stmt: ast.SelectStmt | None, name: str, what: str,
                 sort: bool = False) -> str | None:
    """The ``Rewrite:`` of a refusal of ``what`` (e.g. "the window"): deploy the rows (or, with
    ``sort``, the query without its ORDER BY/LIMIT), compute ``what`` when reading; None when
    ``stmt`` cannot be split."""
    parts = sort_split(stmt, name) if stmt is not None and sort else None
    kind = "this view"
    if stmt is not None and parts is None:
        parts, kind = split(stmt, name), "this view of the rows it reads"
    if parts is None:
        return None
    rows, read = parts
    return (f"deploy {kind}: {rows} — and compute {what} when you read it, which gives the "
            f"same rows as your query: {read}")
