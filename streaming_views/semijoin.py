# ruff: noqa: S608 -- the rewrite offered in a refusal is text for the user, not a query run.
"""EXISTS, NOT EXISTS, IN (subquery) and NOT IN as semi- and anti-joins.

A top-level conjunct of WHERE of one of the forms

    [NOT] EXISTS (SELECT ... FROM <schema>.<table> [AS t] WHERE t.c = o.x [AND ...])
    o.x [NOT] IN (SELECT t.c FROM <schema>.<table> [AS t] [WHERE ...])

is a semi-join (anti-join with NOT) of the query's FROM with one more base table: the
subquery's table becomes a base table of the view (its own triggers and change log), joined on
``t.c = o.x``. It is maintained exactly like the NULL-extended side of an outer join
(:mod:`streaming_views.outer`): an outer row passes or not depending only on the subquery rows
with its key, so the view is kept per key value; a transaction that changed only the outer
tables is applied like an inner join (the query is linear in them).

**NOT IN and NULLs.** ``o.x NOT IN (SELECT t.c ...)`` is NULL — the row is left out — as soon as
the subquery yields one NULL, and for a NULL ``o.x`` whenever the subquery yields a row: one
NULL anywhere changes every row, so the view would not be kept per key. It is maintained when
both columns are declared ``NOT NULL`` (then it is NOT EXISTS), and refused otherwise, with the
rewrite to NOT EXISTS (which is what is usually meant).

Refused: a subquery over several tables or a subquery in FROM, aggregation, DISTINCT, LIMIT or
set operations inside it, a subquery not correlated by an equality with the outer query, a
subquery elsewhere than a top-level conjunct of WHERE (in SELECT, under OR), scalar subqueries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast, enums

from streaming_views.astutil import deparse, line_col, location, walk
from streaming_views.errors import UnsupportedViewError
from streaming_views.outer import conjuncts

AGGREGATES = {"count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "array_agg",
              "string_agg", "json_agg", "jsonb_agg"}
REWRITE = ("write it as '[NOT] EXISTS (select 1 from <schema>.<table> t where t.<column> = "
           "<alias>.<column> [and ...])' over one table, as a top-level AND of WHERE.")


@dataclass(frozen=True)
class SemiJoin:
    """One EXISTS/IN conjunct: the SubLink, its table, the correlating column pairs
    ((outer alias, column), (inner alias, column)), whether negated and the construct name."""

    node: Any
    table: Any  # the RangeVar inside the subquery
    pairs: tuple[tuple[tuple[str, str], tuple[str, str]], ...]
    negated: bool
    construct: str


def _refuse(view: Any, construct: str, node: Any, reason: str,
            rewrite: str | None = REWRITE) -> UnsupportedViewError:
    line, col = line_col(view.text, location(node))
    return UnsupportedViewError(construct, reason, path=str(view.path), line=line, column=col,
                                rewrite=rewrite)


def collect(view: Any, where: Any, outer_refs: set[str]) -> list[SemiJoin]:
    """The semi- and anti-joins of WHERE.

    Args:
        view: the view file (for positions).
        where: the WHERE condition (syntax), or None.
        outer_refs: the names the query's FROM tables go by.

    Raises:
        UnsupportedViewError: a subquery the engine cannot keep as a semi- or anti-join.
    """
    found = []
    for conj in conjuncts(where):
        negated = isinstance(conj, ast.BoolExpr) and conj.boolop == enums.BoolExprType.NOT_EXPR
        link = conj.args[0] if negated else conj
        if isinstance(link, ast.SubLink):
            found.append(_semijoin(view, link, negated, outer_refs))
    return found


def _semijoin(view: Any, link: ast.SubLink, negated: bool, outer: set[str]) -> SemiJoin:
    kind = link.subLinkType
    if kind == enums.SubLinkType.EXISTS_SUBLINK:
        construct = "NOT EXISTS" if negated else "EXISTS"
    elif kind == enums.SubLinkType.ANY_SUBLINK and [n.sval for n in link.operName or ()] \
            in ([], ["="]):
        construct = "NOT IN (subquery)" if negated else "IN (subquery)"
    else:
        raise _refuse(view, "subquery in an expression", link, "only [NOT] EXISTS and "
                      "[NOT] IN (subquery) are maintained, as semi- and anti-joins.")
    sub = link.subselect
    if not isinstance(sub, ast.SelectStmt) or sub.op != enums.SetOperation.SETOP_NONE \
            or sub.groupClause or sub.havingClause or sub.distinctClause is not None \
            or sub.limitCount is not None or sub.limitOffset is not None or sub.withClause \
            or sub.sortClause or any(isinstance(n, ast.FuncCall) and n.funcname[-1].sval.lower()
                                     in AGGREGATES for n in walk(sub.targetList)):
        raise _refuse(view, f"{construct} with a grouped or limited subquery", link,
                      "the subquery must read one table row by row.")
    items = sub.fromClause or ()
    if len(items) != 1 or not isinstance(items[0], ast.RangeVar):
        raise _refuse(view, f"{construct} over several tables", link, "the subquery must read "
                      "one base table (a semi-join with one table).")
    table = items[0]
    ref = table.alias.aliasname if table.alias is not None else table.relname
    if ref in outer:
        raise _refuse(view, f"{construct} reusing the alias {ref}", table, "the subquery's "
                      "table needs an alias of its own.", f"alias it: {deparse(table)} AS "
                      f"{ref}2.")
    for node in walk(sub.whereClause):
        if isinstance(node, ast.SubLink):
            raise _refuse(view, f"nested subquery in {construct}", node, "one level only.")
    pairs = []
    for conj in conjuncts(sub.whereClause):
        pair = _equality(conj, ref, outer)
        if pair is not None:
            pairs.append(pair)
    if kind == enums.SubLinkType.ANY_SUBLINK:
        target = sub.targetList[0].val if len(sub.targetList) == 1 else None
        inner = _column(target, {ref})
        test = _column(link.testexpr, outer)
        if inner is None or test is None:
            raise _refuse(view, f"{construct} of an expression", link, "IN compares a column "
                          "of the query with a column of the subquery's table here.")
        pairs.append((test, inner))
    if not pairs:
        raise _refuse(view, f"uncorrelated {construct}", link, "the subquery must equate a "
                      "column of its table with a column of the query (t.c = o.x).")
    return SemiJoin(link, table, tuple(pairs), negated, construct)


def _column(node: Any, refs: set[str]) -> tuple[str, str] | None:
    if isinstance(node, ast.ColumnRef) and len(node.fields) == 2 \
            and all(isinstance(f, ast.String) for f in node.fields) \
            and node.fields[0].sval in refs:
        return node.fields[0].sval, node.fields[1].sval
    return None


def _equality(node: Any, ref: str, outer: set[str]) -> tuple | None:
    if not (isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP
            and [n.sval for n in node.name] == ["="]):
        return None
    a, b = _column(node.lexpr, outer), _column(node.rexpr, {ref})
    if a is None or b is None:
        a, b = _column(node.rexpr, outer), _column(node.lexpr, {ref})
    return None if a is None or b is None else (a, b)


def check_not_in(conn: Any, cv: Any) -> None:
    """Refuse NOT IN over a column that may be NULL (either side).

    Raises:
        UnsupportedViewError: NOT IN whose columns are not both declared NOT NULL.
    """
    an = cv.analysis
    by_ref = {t.ref: t for t in an.tables}
    for semi in an.semijoins:
        if not semi.construct.startswith("NOT IN"):
            continue
        for ref, column in semi.pairs[-1]:
            table = by_ref[ref]
            row = conn.execute(
                "select a.attnotnull from pg_attribute a join pg_class c on c.oid = a.attrelid "
                "join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s and "
                "c.relname = %s and a.attname = %s", (table.schema, table.name, column)
            ).fetchone()
            if not (row and row[0]):
                test = deparse(semi.node.testexpr)
                raise _refuse(an.view, "NOT IN (subquery) over a nullable column", semi.node,
                              f"{ref}.{column} may be NULL, and NOT IN is then NULL (the row "
                              "left out) for every row as soon as one NULL is there, so the "
                              "view could not be kept per key.",
                              f"use NOT EXISTS (select 1 from {table.schema}.{table.name} "
                              f"{semi.pairs[-1][1][0]} where {semi.pairs[-1][1][0]}."
                              f"{semi.pairs[-1][1][1]} = {test}), which is what is usually "
                              "meant, or declare both columns NOT NULL.")
