"""Two-level aggregation: an aggregate over a grouped subquery in FROM.

    select c.orders, count(*) as customers
    from (select o.customer_id, count(*) as orders from shop.orders o
          group by o.customer_id) as c
    group by c.orders

**Design.** The inner query's rows are partitioned by its group key (``customer_id``): an inner
row depends only on the base rows with its key. So the inner aggregate is the partition key of
:mod:`streaming_views.outer`: a transaction's change of the view's flat rows (the inner rows)
is the inner query over the tables now minus over the tables before, both restricted to the
inner keys the transaction touched — PostgreSQL evaluates the inner aggregate on just those
keys (an index probe per key) — and the outer aggregate takes that signed difference through
its ordinary rules. A NULL inner key is one group like any other (unlike a join key, which never
matches), so it is probed with ``IS NULL``. Nothing about the inner query is linear, so every
transaction takes that path.

Supported: one base table in the inner FROM, its WHERE and HAVING, GROUP BY plain columns of it,
the engine's aggregates (count, sum, avg, min, max, bool_and, bool_or, DISTINCT and FILTER
included — PostgreSQL computes them), any outer query the engine maintains over the inner
columns. Refused: joins, DISTINCT, LIMIT or set operations inside, a group key that is an
expression (rewrite: group the inner query by the column).
"""

from __future__ import annotations

from typing import Any

from pglast import ast, enums

from streaming_views.outer import OuterJoin


def is_grouped(item: Any) -> bool:
    """True for ``FROM (<select> ... GROUP BY ... | aggregates) AS alias``."""
    from streaming_views.inline import AGGREGATES
    sub = getattr(item, "subquery", None)
    if not isinstance(item, ast.RangeSubselect) or not isinstance(sub, ast.SelectStmt) \
            or sub.op != enums.SetOperation.SETOP_NONE:
        return False
    if sub.groupClause:
        return True
    from streaming_views.astutil import walk
    return any(isinstance(n, ast.FuncCall) and n.funcname[-1].sval.lower() in AGGREGATES
               for t in sub.targetList for n in walk(t.val))


def analyze_inner(item: ast.RangeSubselect, chk: Any, collect_tables: Any,
                  check_shape: Any, check_expressions: Any, collect_aggs: Any,
                  ) -> tuple[list[Any], OuterJoin]:
    """Check the inner query; return its base table and the partition key (its group key).

    Args:
        item: the FROM subquery.
        chk: the analyzer's checker (``refuse``).
        collect_tables, check_shape, check_expressions, collect_aggs: the analyzer's checks.

    Raises:
        UnsupportedViewError: an inner query outside the supported form.
    """
    sub = item.subquery
    rewrite = ("group the inner query of one table by plain columns: (select t.k, count(*) as n "
               "from s.t t group by t.k) as c; for more, deploy the inner aggregate as its own "
               "live view and aggregate it when you read.")
    if item.lateral or item.alias is None or item.alias.colnames:
        raise chk.refuse("two-level aggregation with LATERAL or column aliases", item,
                         "not supported.", rewrite)
    check_shape(sub, chk)
    if sub.distinctClause is not None:
        raise chk.refuse("DISTINCT inside a grouped subquery", sub.targetList[0],
                         "not supported.", rewrite)
    tables: list[Any] = []
    items = sub.fromClause or ()
    if len(items) != 1 or not isinstance(items[0], ast.RangeVar):
        raise chk.refuse("two-level aggregation over several tables", sub.targetList[0],
                         "the inner query must read one base table.", rewrite)
    collect_tables(items[0], tables, chk)
    check_expressions(sub, chk)
    collect_aggs(sub, chk)
    ref = tables[0].ref
    keys = []
    for node in sub.groupClause or ():
        if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer) \
                and 1 <= node.val.ival <= len(sub.targetList):
            node = sub.targetList[node.val.ival - 1].val
        if not (isinstance(node, ast.ColumnRef) and len(node.fields) == 2
                and getattr(node.fields[0], "sval", None) == ref
                and isinstance(node.fields[1], ast.String)):
            raise chk.refuse("two-level aggregation grouped by an expression", node,
                             "the inner group key must be columns of the table.", rewrite)
        keys.append(node.fields[1].sval)
    if not keys:
        raise chk.refuse("two-level aggregation without an inner GROUP BY", sub.targetList[0],
                         "the inner query must group.", rewrite)
    return tables, OuterJoin({0: tuple(keys)}, frozenset(), grouped=True)
