"""Inline non-recursive WITH and pull simple FROM subqueries up into the query.

Before the check (:mod:`streaming_views.analyzer`), the statement is rewritten into one query
block over base tables, the way PostgreSQL's planner inlines CTEs and pulls up subqueries:

* ``WITH x AS (<select>) ... FROM x`` — every reference to ``x`` becomes the subquery
  ``(<select>) AS x`` (a CTE read twice becomes two subqueries: a self-join);
* ``FROM (<select> FROM <tables> WHERE <cond>) AS s`` joined to tables — the subquery's tables
  take its place in the join tree, ``s.col`` becomes the subquery's expression for ``col``, and
  ``<cond>`` joins the outer WHERE (or the ON of the outer join whose NULL-extended side the
  subquery is). Then joins, outer joins, self-joins and semi-joins of the result are maintained
  as usual.

Kept as they are (and checked by the analyzer): a sole ``FROM (<select> UNION ALL <select>)``
(the engine's union branches) and a subquery that aggregates — refused there with a rewrite (a
two-level aggregation, e.g. a distribution of per-customer order counts, is not maintained:
deploy the inner aggregate as its own view). Not pulled up (the analyzer refuses them): a
subquery with DISTINCT, LIMIT, window functions or set operations, LATERAL or column aliases,
one on the NULL-extended side whose columns are computed (``coalesce(x, 0)`` would not be NULL
for a NULL-extended row), and one whose alias or table aliases collide.
"""

from __future__ import annotations

import copy
from typing import Any

from pglast import ast, enums

from streaming_views.astutil import substitute, walk

AGGREGATES = {"count", "sum", "avg", "min", "max", "bool_and", "bool_or"}


class _Skip(Exception):
    """This subquery is left for the analyzer (which refuses or keeps it)."""


def rewrite(stmt: ast.SelectStmt, refuse: Any) -> ast.SelectStmt:
    """Return ``stmt`` with WITH inlined and simple FROM subqueries pulled up.

    Args:
        stmt: the parsed SELECT.
        refuse: ``refuse(construct, node, reason, rewrite)`` building the analyzer's error.

    Raises:
        UnsupportedViewError: a WITH the engine cannot inline (RECURSIVE, data-modifying).
    """
    stmt = copy.deepcopy(stmt)
    if stmt.withClause is not None:
        stmt = _inline_with(stmt, refuse)
    if stmt.op != enums.SetOperation.SETOP_NONE:
        return stmt
    items = list(stmt.fromClause or ())
    if len(items) == 1 and isinstance(items[0], ast.RangeSubselect) \
            and items[0].subquery.op != enums.SetOperation.SETOP_NONE:
        return stmt  # UNION ALL branches
    for _ in range(8):  # nested subqueries: one level per pass
        if not _pull_one(stmt):
            break
    return stmt


def _inline_with(stmt: ast.SelectStmt, refuse: Any) -> ast.SelectStmt:
    clause = stmt.withClause
    if clause.recursive:
        raise refuse("WITH RECURSIVE", clause, "a recursive query has no incremental rule here.",
                     "deploy the recursion's result as a table, or inline a fixed depth as "
                     "joins.")
    ctes: dict[str, Any] = {}
    for cte in clause.ctes:
        if not isinstance(cte.ctequery, ast.SelectStmt):
            raise refuse("data-modifying WITH", cte, "a view only reads.", "remove it.")
        if cte.aliascolnames:
            raise refuse("WITH column names", cte, "not supported.",
                         "name the columns inside the CTE's SELECT.")
        query = _expand(copy.deepcopy(cte.ctequery), ctes)
        ctes[cte.ctename] = query
    stmt.withClause = None
    return _expand(stmt, ctes)


def _expand(node: Any, ctes: dict[str, Any]) -> Any:
    def swap(n: ast.Node) -> ast.Node | None:
        if isinstance(n, ast.RangeVar) and not n.schemaname and n.relname in ctes:
            alias = n.alias.aliasname if n.alias is not None else n.relname
            return ast.RangeSubselect(lateral=False, subquery=copy.deepcopy(ctes[n.relname]),
                                      alias=ast.Alias(aliasname=alias))
        return None
    return substitute(node, swap)


def _simple(sub: Any) -> bool:
    return (isinstance(sub, ast.SelectStmt) and sub.op == enums.SetOperation.SETOP_NONE
            and not sub.groupClause and sub.havingClause is None
            and sub.distinctClause is None and sub.limitCount is None
            and sub.limitOffset is None and not sub.sortClause and sub.withClause is None
            and not sub.windowClause and len(sub.fromClause or ()) == 1
            and not any(isinstance(n, ast.FuncCall) and (
                n.funcname[-1].sval.lower() in AGGREGATES or n.over is not None)
                for t in sub.targetList for n in walk(t.val))
            and not any(isinstance(n, ast.A_Star) for n in walk(sub.targetList)))


def _pull_one(stmt: ast.SelectStmt) -> bool:
    """Pull up the first simple subquery of FROM; True when one was."""
    found: list[tuple[Any, Any, str]] = []  # (subquery, parent JoinExpr or None, position)

    def visit(item: Any, parent: Any, side: str) -> None:
        if isinstance(item, ast.RangeSubselect):
            found.append((item, parent, side))
        elif isinstance(item, ast.JoinExpr):
            visit(item.larg, item, "l")
            visit(item.rarg, item, "r")
    for i, item in enumerate(stmt.fromClause or ()):
        visit(item, None, str(i))
    for sub, parent, side in found:
        try:
            _pull(stmt, sub, parent, side)
            return True
        except _Skip:
            continue
    return False


def _nullable(stmt: ast.SelectStmt, target: Any) -> tuple[bool, Any]:
    """(is ``target`` on some NULL-extended side, the join whose direct nullable child it is)."""
    result = [False, None]

    def visit(item: Any, nullable: bool) -> None:
        if item is target:
            result[0] = nullable
            return
        if isinstance(item, ast.JoinExpr):
            kind = item.jointype
            lnull = kind in (enums.JoinType.JOIN_RIGHT, enums.JoinType.JOIN_FULL)
            rnull = kind in (enums.JoinType.JOIN_LEFT, enums.JoinType.JOIN_FULL)
            if item.larg is target and lnull or item.rarg is target and rnull:
                result[1] = item
            visit(item.larg, nullable or lnull)
            visit(item.rarg, nullable or rnull)
    for item in stmt.fromClause or ():
        visit(item, False)
    return result[0], result[1]


def _pull(stmt: ast.SelectStmt, item: ast.RangeSubselect, parent: Any, side: str) -> None:
    sub = item.subquery
    if item.lateral or item.alias is None or item.alias.colnames or not _simple(sub):
        raise _Skip
    alias = item.alias.aliasname
    inner_refs = {n.alias.aliasname if n.alias is not None else n.relname
                  for n in walk(sub.fromClause) if isinstance(n, ast.RangeVar)}
    outer_refs = {n.alias.aliasname if n.alias is not None else n.relname
                  for n in walk(stmt.fromClause, into_subqueries=False)
                  if isinstance(n, ast.RangeVar)}
    if any(isinstance(n, ast.ColumnRef) and len(n.fields) == 1
           for n in walk([t.val for t in stmt.targetList] + [stmt.whereClause,
                                                             stmt.havingClause])):
        raise _Skip  # unqualified columns: leave it to the analyzer
    for ref in sorted(inner_refs & (outer_refs | {alias})):  # e.g. a CTE read twice
        sub = _rename(sub, ref, f"{alias}_{ref}")
    columns: dict[str, Any] = {}
    for target in sub.targetList:
        name = target.name or (target.val.fields[-1].sval if isinstance(
            target.val, ast.ColumnRef) and isinstance(target.val.fields[-1], ast.String)
            else None)
        if name is not None:
            columns.setdefault(name, target.val)
    nullable, direct = _nullable(stmt, item)
    if nullable and any(not isinstance(v, ast.ColumnRef) for v in columns.values()):
        raise _Skip
    if nullable and sub.whereClause is not None and (
            direct is None or direct.jointype == enums.JoinType.JOIN_FULL):
        raise _Skip
    # the subquery's table(s) take its place, its WHERE joins the outer WHERE or the ON
    replacement = sub.fromClause[0]
    if parent is None:
        items = list(stmt.fromClause)
        items[int(side)] = replacement
        stmt.fromClause = tuple(items)
    elif side == "l":
        parent.larg = replacement
    else:
        parent.rarg = replacement
    cond = sub.whereClause
    if cond is not None and nullable:
        direct.quals = _and(direct.quals, cond)
    elif cond is not None:
        stmt.whereClause = _and(stmt.whereClause, cond)

    def swap(n: ast.Node) -> ast.Node | None:
        if isinstance(n, ast.ColumnRef) and len(n.fields) == 2 and isinstance(
                n.fields[0], ast.String) and n.fields[0].sval == alias:
            col = n.fields[1]
            if isinstance(col, ast.String) and col.sval in columns:
                return copy.deepcopy(columns[col.sval])
        return None
    for target in stmt.targetList:
        val = target.val
        if target.name is None and isinstance(val, ast.ColumnRef) and len(val.fields) == 2 \
                and getattr(val.fields[0], "sval", None) == alias \
                and isinstance(val.fields[1], ast.String):
            target.name = val.fields[1].sval  # the output keeps its name
        target.val = substitute(val, swap)
    stmt.whereClause = substitute(stmt.whereClause, swap)
    stmt.havingClause = substitute(stmt.havingClause, swap)
    stmt.groupClause = substitute(stmt.groupClause, swap)
    stmt.fromClause = substitute(stmt.fromClause, swap)  # ON conditions


def _rename(sub: ast.SelectStmt, old: str, new: str) -> ast.SelectStmt:
    """``sub`` with its table alias ``old`` renamed ``new`` (and its columns' references)."""
    def swap(n: ast.Node) -> ast.Node | None:
        if isinstance(n, ast.RangeVar) and (n.alias.aliasname if n.alias is not None
                                            else n.relname) == old:
            renamed = copy.copy(n)
            renamed.alias = ast.Alias(aliasname=new)
            return renamed
        if isinstance(n, ast.ColumnRef) and len(n.fields) == 2 \
                and getattr(n.fields[0], "sval", None) == old:
            return ast.ColumnRef(fields=(ast.String(sval=new), n.fields[1]),
                                 location=n.location)
        return None
    return substitute(sub, swap)


def _and(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=(a, b))
