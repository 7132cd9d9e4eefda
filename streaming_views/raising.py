"""Divisions that could make a writer's statement fail, refused at deploy.

The engine evaluates a view's row-level expressions — WHERE, join conditions, group keys,
aggregate arguments and FILTERs, the outputs of a view without aggregates, and everything in a
FROM subquery — for each written row, inside the writer's statement. A division (``/``, ``%``,
``div()``, ``mod()``) by a value that is 0 for some row raises there, so one such row would make
the write fail (and, on landing, stop ingestion) instead of the view. PostgreSQL's own query
raises too, so no rewrite is equivalent; the error message says so and offers the usual guard.

An aggregate view's outputs and HAVING are different: they are computed from the aggregates
when ``live.<view>`` is read, so ``sum(a) / sum(b)`` raises for the reader, as the query does,
and never for a writer. Except for a view that reads ``live.<inner>``: it reads the inner
view's rows in the writer's commit, so :func:`finaliser_division` finds the divisions of the
inner view's outputs that can meet a 0 (``count(*)`` cannot in a view with GROUP BY: every group
has a row; in one without, the table can be empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pglast import ast
from pglast.enums import A_Expr_Kind

from streaming_views.astutil import deparse, walk

# Every aggregate the engine maintains (streaming_views.analyzer.AGGREGATES) and the ones it
# names in a refusal: their arguments are row-level.
AGGREGATES = {"count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every"}
DIVISIONS = {"/", "%"}
DIVISION_FUNCTIONS = {"div", "mod"}


def refuse_row_divisions(stmt: ast.SelectStmt, kind: str, group: list[Any], aggs: list[Any],
                         refuse: Callable[..., Exception]) -> None:
    """Refuse a division by a non-constant value in a row-level expression of ``stmt``.

    Args:
        stmt: the view's SELECT (WITH and FROM subqueries inlined).
        kind: ``aggregate``, ``distinct`` or ``bag``.
        group: the group key expressions (every output for ``distinct``/``bag``).
        aggs: the aggregate calls (:class:`streaming_views.analyzer.AggCall`).
        refuse: builds the ``file:line:column`` error.

    Raises:
        UnsupportedViewError: (from ``refuse``) the first such division.
    """
    roots: list[Any] = [stmt.whereClause, *group, *(stmt.fromClause or ())]
    for agg in aggs:
        roots += [agg.node.args, agg.node.agg_filter]
    if kind != "aggregate":
        roots += [t.val for t in stmt.targetList]
    for node, divisor in _divisions([r for r in roots if r is not None]):
        if _safe_divisor(divisor, count_star_safe=False):
            continue
        shown = deparse(divisor)
        raise refuse(
            f"division by {shown}", node,
            f"{deparse(node)} is computed for each written row inside the writer's statement, "
            f"so a row where {shown} is 0 would make that write fail (division by zero) — on "
            f"landing, it would stop ingestion — instead of the view. The query raises for "
            f"such a row too, so no equivalent rewrite exists.",
            f"guard the divisor, nullif({shown}, 0), if NULL is the answer you want for those "
            f"rows (aggregates skip NULLs); or, in a view with GROUP BY, divide the aggregates "
            f"instead: sum(...) / nullif(sum(...), 0).")


def finaliser_division(outputs: list[tuple[str | None, Any]], having: Any | None,
                       grouped: bool) -> tuple[str, str] | None:
    """The first division of an aggregate view's outputs or HAVING (outside its aggregate
    calls) whose divisor can be 0, as (the division, its divisor), or None.

    Args:
        outputs: (name, expression) per output column.
        having: the HAVING condition, or None.
        grouped: the view has GROUP BY (so ``count(*)`` is at least 1 in every row).
    """
    roots = [val for _, val in outputs] + ([having] if having is not None else [])
    for node, divisor in _divisions(roots, skip_aggregates=True):
        if not _safe_divisor(divisor, count_star_safe=grouped):
            return deparse(node), deparse(divisor)
    return None


def _divisions(roots: list[Any], skip_aggregates: bool = False) -> Iterator[tuple[Any, Any]]:
    """Every division below ``roots`` as (node, divisor)."""
    for node in _walk(roots, skip_aggregates):
        if isinstance(node, ast.A_Expr) and node.name and node.rexpr is not None and \
                getattr(node.name[-1], "sval", None) in DIVISIONS:
            yield node, node.rexpr
        elif isinstance(node, ast.FuncCall) and len(node.args or ()) == 2 and \
                node.funcname[-1].sval.lower() in DIVISION_FUNCTIONS:
            yield node, node.args[1]


def _walk(roots: list[Any], skip_aggregates: bool) -> Iterator[Any]:
    return walk(roots, skip=_is_aggregate if skip_aggregates else None)


def _is_aggregate(node: ast.Node) -> bool:
    """An aggregate call: computed per row into the state, so refuse_row_divisions looks inside."""
    return isinstance(node, ast.FuncCall) and (node.agg_star or node.agg_filter is not None
                                               or node.funcname[-1].sval.lower() in AGGREGATES)


def _safe_divisor(divisor: Any, *, count_star_safe: bool) -> bool:
    """A divisor that is never 0: a non-zero number, ``nullif(x, 0)``, or (``count_star_safe``)
    an unfiltered ``count(*)``; casts of these too."""
    divisor = _uncast(divisor)
    if isinstance(divisor, ast.A_Const):
        return _number(divisor) not in (None, 0.0)
    if isinstance(divisor, ast.A_Expr) and divisor.kind == A_Expr_Kind.AEXPR_NULLIF:
        return _number(_uncast(divisor.rexpr)) == 0.0
    return bool(count_star_safe and isinstance(divisor, ast.FuncCall) and divisor.agg_star
                and divisor.agg_filter is None and divisor.funcname[-1].sval.lower() == "count")


def _uncast(node: Any) -> Any:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node


def _number(node: Any) -> float | None:
    """The value of a numeric constant, else None."""
    if not isinstance(node, ast.A_Const):
        return None
    if isinstance(node.val, ast.Integer):
        return float(node.val.ival)
    if isinstance(node.val, ast.Float):
        return float(node.val.fval)
    return None
