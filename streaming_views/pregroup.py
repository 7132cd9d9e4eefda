# ruff: noqa: S608 -- this module generates SQL from the view's deparsed syntax tree; identifiers
# are quoted with psycopg.sql.Identifier (q()).
"""Group a large delta by its join columns before the join (partial aggregation).

A transaction that changed one base table ``j`` of a join view applies its change log joined
to the other tables as they are (:mod:`streaming_views.deltas`). When every aggregate of the
view is a sum of per-row terms (``count``, ``sum``, ``avg``, ``bool_and``/``bool_or``, with
FILTER) over columns of ``j`` alone, the log's rows can first be summed per value of the
columns of ``j`` the rest of the query reads (the join columns, group keys, conditions on
other tables too): one row per join partner instead of one per changed row. The join, the
sort and the grouped upsert then handle those few rows — a 10,000-row UPDATE of ``orders``
in a view joined to 1,000 ``stores`` joins at most 2,000 partial rows instead of 20,000.

Exact: each of the view's hidden columns of such rules is a sum over the group's rows
(:mod:`streaming_views.rules`), a sum of partial sums is the same sum — integer and
``numeric`` sums exactly, as ``interval`` ones; the inclusion-exclusion sign of the term is
the log's own sign. Used only for the plan of large deltas (the one planned afresh); a view
outside that shape (min/max, DISTINCT aggregates, tracked display scales, outer joins, UNION
ALL, temporal filters, views over views, self-joins, unqualified column names) keeps the
plain statement, and so does one whose grouping columns have values equal but not identical
(unconstrained ``numeric``, ``float``, text under a nondeterministic collation...): grouping
would merge ``1.0`` and ``1.00``.
"""

from __future__ import annotations

from typing import Any

from pglast import ast

from streaming_views.astutil import deparse, q, substitute, walk
from streaming_views.compiler import with_upsert
from streaming_views.layers import is_live
from streaming_views.outer import conjuncts, identical

ADDITIVE = {"count", "bool", "sum"}  # rules whose every column is a sum over the rows


def _refs(node: Any) -> list[ast.ColumnRef] | None:
    """The column references in ``node`` (not into subqueries); None when one of them is not
    ``alias.column`` or ``node`` holds a subquery."""
    out = []
    for n in walk(node):
        if isinstance(n, ast.SubLink | ast.RangeSubselect):
            return None
        if isinstance(n, ast.ColumnRef):
            if len(n.fields) != 2 or not all(isinstance(f, ast.String) for f in n.fields):
                return None
            out.append(n)
    return out


def _eligible(cv: Any, j: int) -> bool:
    an = cv.analysis
    if (an.kind != "aggregate" or not an.group or an.branches or an.outer is not None
            or an.semijoins or an.temporal is not None or len(cv.tables) < 2
            or cv.distinct_rules or any(is_live(t) for t in cv.resolved.tables)):
        return False
    if len({(t.schema, t.name) for t in cv.tables}) != len(cv.tables):  # a self-join
        return False
    if any(isinstance(n, ast.JoinExpr) and (n.usingClause or n.isNatural)
           for n in walk(an.from_clause)):  # columns the swapped table would not have
        return False
    for rule in cv.rules:
        if rule.kind not in ADDITIVE or getattr(rule, "scaled", False) or rule.windows():
            return False
    return True


def _columns_of(refs: list[ast.ColumnRef], ref: str) -> set[str]:
    return {r.fields[1].sval for r in refs if r.fields[0].sval == ref}


def statement(cv: Any, j: int, ctes: list[str]) -> str | None:
    """The apply statement of a transaction that changed only base table ``j``, its log's rows
    summed per value of the columns the join reads first; None when the view is not of that
    shape.

    Args:
        cv: the compiled view.
        j: the changed table (its log's rows are the CTE ``__l<j>``).
        ctes: the CTEs reading the log (``__m<j>``, ``__l<j>``).
    """
    if not _eligible(cv, j):
        return None
    an = cv.analysis
    ref = cv.tables[j].ref
    inner_rows, outer_conds = [], []  # WHERE conjuncts on j alone / the others
    for conj in conjuncts(an.where):
        refs = _refs(conj)
        if refs is None:
            return None
        if all(r.fields[0].sval == ref for r in refs):
            inner_rows.append(f"({deparse(conj)})")
        else:
            outer_conds.append(conj)
    needed: set[str] = set()
    for node in [*an.from_clause, *an.group, *outer_conds]:
        refs = _refs(node) if not isinstance(node, ast.RangeVar) else []
        if refs is None:
            return None
        needed |= _columns_of(refs, ref)
    flat_rule_cols = [(n, e) for rule in cv.rules for n, e in rule.flat()]
    for rule in cv.rules:
        for node in (rule.call.arg, rule.call.filter):
            refs = [] if node is None else _refs(node)
            if refs is None or any(r.fields[0].sval != ref for r in refs):
                return None
    columns = {c.name: c for c in cv.resolved.tables[j].columns}
    if not needed or not all(c in columns and identical(columns[c]) for c in needed):
        return None  # rows equal but told apart (1.0 and 1.00) must not be merged
    keep = sorted(needed)
    exprs = ["coalesce(sum(__sign), 0)::bigint"]
    types = ["bigint"]
    for rule in cv.rules:
        exprs += rule.exprs(True)
        types += [t for _, t in rule.columns()]
    partials = [f"__tm_p{i}" for i in range(len(exprs))]
    inner = ", ".join([f"{q(ref)}.__tm_sign::integer AS __sign",
                       *(f"{q(ref)}.{q(c)} AS {q(c)}" for c in keep),
                       *(f"{e} AS {n}" for n, e in flat_rule_cols)])
    where = f" WHERE {' AND '.join(inner_rows)}" if inner_rows else ""
    cols = ", ".join(q(c) for c in keep)
    grouped = (f"__pg{j} AS (SELECT {cols}, "
               + ", ".join(f"{e} AS {p}" for e, p in zip(exprs, partials, strict=True))
               + f" FROM (SELECT {inner} FROM __l{j} AS {q(ref)}{where}) AS __d "
               f"GROUP BY {cols})")

    def swap(node: ast.Node) -> ast.Node | None:
        if node is cv.tables[j].node:
            return ast.RangeVar(relname=f"__pg{j}", inh=True, relpersistence="p",
                                alias=ast.Alias(aliasname=ref))
        return None
    from_sql = ", ".join(deparse(substitute(item, swap)) for item in an.from_clause)
    keys = [f"{deparse(k)} AS __k{i}" for i, k in enumerate(an.group)]
    rows = (f"SELECT {', '.join([*keys, *(f'{q(ref)}.{p}' for p in partials)])} "
            f"FROM {from_sql}")
    if outer_conds:
        rows += " WHERE " + " AND ".join(f"({deparse(c)})" for c in outer_conds)
    names = ", ".join(cv.key_names())
    sums = [f"coalesce(sum({p}), '0'::{t})::{t}" for p, t in zip(partials, types, strict=True)]
    # a group new to the state is recomputed when a rule says so from its summed columns
    # (a numeric(p, s) sum that is NaN: streaming_views.sums.SumRule.nan_recomputed)
    summed = dict(zip(["__count", *(c for r in cv.rules for c, _ in r.columns())], sums,
                      strict=True))
    dirty = " OR ".join(d for r in cv.rules if (d := r.grouped_dirty(summed))) or "false"
    source = (f"SELECT {names}, {', '.join(sums)}, {dirty}, now() FROM ({rows}) AS __d "
              f"GROUP BY {names} ORDER BY {names}")
    return with_upsert([*ctes, grouped], cv.upsert_sql(source))
