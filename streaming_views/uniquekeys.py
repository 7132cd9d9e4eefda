# ruff: noqa: S608 -- fixed catalog SQL
"""The unique keys a view relies on: a join that equates all the columns of a unique key of a
table to columns of another table meets at most one row of it for each row of that other table
(:func:`streaming_views.onegroup.one_per_group`).

Learnt at deploy (:func:`mark_keys`): the key's columns are recorded with ``key`` in the view's
catalog record (:meth:`streaming_views.used_columns.Column.record`), and
``tidemark.live_problem`` (so the DDL guard, ``verify`` and ``deploy``) reports the view broken
when no unique index proves the key any more (:data:`UNIQUE_KEY_SQL`): dropped, made
deferrable, or an inheritance child added (whose rows no index of the parent covers).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import psycopg
from pglast import ast, enums

from streaming_views.astutil import walk

if TYPE_CHECKING:
    from streaming_views.analyzer import Analysis
    from streaming_views.resolve import TableInfo

# The unique indexes of relation %(rel)s that prove a key: valid, not deferrable, on plain
# columns, without predicate, each column's operator class its type's default and collation
# its own (so the index's equality is the join's ``=``). Their key columns, as int2[].
UNIQUE_KEYS = """select array(select u.k from unnest(string_to_array(i.indkey::text, ' ')::int2[])
    with ordinality u(k, n) where u.n <= i.indnkeyatts) as keys
  from pg_index i where i.indrelid = {rel} and i.indisunique and i.indimmediate
    and i.indisvalid and i.indpred is null and i.indexprs is null
    and not exists (select 1 from unnest(string_to_array(i.indkey::text, ' ')::int2[],
          i.indclass::oid[], i.indcollation::oid[]) with ordinality u(k, cls, coll, n)
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = u.k
        join pg_opclass o on o.oid = u.cls
        where u.n <= i.indnkeyatts and (not o.opcdefault or u.coll <> a.attcollation))"""
# Condition (PL/pgSQL, tidemark.live_problem): the key recorded on column v_col of relation
# v_oid is still proved — a unique index on a subset of its columns, on a table whose rows are
# all in it (partitioned, or no inheritance child).
UNIQUE_KEY_SQL = (
    "((select relkind from pg_class where oid = v_oid) = 'p' "
    "or (select count(*) from tidemark.live_family(v_oid)) = 1) and exists (select 1 from ("
    + UNIQUE_KEYS.format(rel="v_oid")
    + ") x where x.keys <@ array(select jsonb_array_elements_text(v_col -> 'key'))::int2[])")



def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        return [c for arg in node.args for c in _conjuncts(arg)]
    return [node]


def equalities(an: Analysis) -> list[tuple[str, str, str, str]]:
    """``(ref, column, ref, column)`` of each ``a.x = b.y`` between two tables that holds for
    every row of the join: a conjunct of WHERE or of an inner join's ON (both ways round). None
    in a FROM with a subquery or an outer join."""
    roots = [an.where]
    for node in walk(list(an.from_clause), into_subqueries=False):
        if isinstance(node, ast.RangeSubselect | ast.RangeFunction):
            return []
        if isinstance(node, ast.JoinExpr):
            if node.jointype != enums.JoinType.JOIN_INNER:
                return []
            roots.append(node.quals)
    out = []
    for root in roots:
        for c in _conjuncts(root) if root is not None else []:
            if not (isinstance(c, ast.A_Expr) and c.kind == enums.A_Expr_Kind.AEXPR_OP
                    and [n.sval for n in c.name] == ["="]):
                continue
            sides = [s.fields for s in (c.lexpr, c.rexpr) if isinstance(s, ast.ColumnRef)
                     and len(s.fields) == 2 and all(isinstance(f, ast.String) for f in s.fields)]
            if len(sides) == 2 and sides[0][0].sval != sides[1][0].sval:
                (a, x), (b, y) = ((f.sval for f in s) for s in sides)
                out += [(a, x, b, y), (b, y, a, x)]
    return out


def equated(an: Analysis, tables: list[TableInfo], t: int, j: int | None) -> set[int]:
    """The attnums of table ``t``'s columns equated to a column of the same type of table
    ``j`` (None: of any other table)."""
    refs = {r.ref: i for i, r in enumerate(an.tables)}
    cols = {i: {c.name: c for c in info.columns} for i, info in enumerate(tables)}
    out = set()
    for a, x, b, y in equalities(an):
        if refs.get(a) != t or b not in refs or refs[b] == t or j is not None and refs[b] != j:
            continue
        mine, other = cols[t].get(x), cols[refs[b]].get(y)
        if mine is not None and other is not None and mine.type_oid == other.type_oid:
            out.add(mine.attnum)
    return out


def mark_keys(conn: psycopg.Connection, an: Analysis, tables: list[TableInfo]) -> None:
    """Record on the columns of each table (of a join without outer joins) the unique key
    they make up when the join equates them all to columns of other tables (the first such
    key found): :func:`one_per_group` relies on it."""
    if len(tables) < 2 or an.outer is not None or an.branches:
        return
    for t, info in enumerate(tables):
        joined = equated(an, tables, t, None)
        if not joined or (info.relkind != "p" and (info.relkind != "r" or info.descendants)):
            continue
        for (keys,) in conn.execute(UNIQUE_KEYS.format(rel="%(rel)s"), {"rel": info.oid}):
            if keys and set(keys) <= joined:
                key = tuple(sorted(keys))
                info.columns = [dataclasses.replace(c, key=key) if c.attnum in key else c
                                for c in info.columns]
                break
