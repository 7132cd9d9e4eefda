"""Aggregate arguments that can never be NULL, so their rule keeps no not-null counter.

``sum(o.amount)`` keeps, beside its sum, how many of the group's values are not NULL
(``__a<i>_nn``): the sum is NULL when none is. When the argument is a column declared ``NOT
NULL`` (a validated constraint, on the table and every partition or inheritance child), used
bare, of a table on no NULL-extended side of an outer join, that count is the group's row
count ``__count`` and the counter is left out (:mod:`streaming_views.rules`).

The view then relies on the constraint: the column's catalog record says so (``notnull``), and
``tidemark.live_problem`` (the DDL guard, ``verify``, ``deploy``) reports the view broken when
a later ``ALTER TABLE ... ALTER COLUMN ... DROP NOT NULL`` removes it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import psycopg

from streaming_views import nodetree

if TYPE_CHECKING:
    from streaming_views.analyzer import Analysis

# Column ``a`` (pg_attribute) has a validated NOT NULL (PostgreSQL 18's NOT VALID one has
# attnotnull too, and rows with NULLs).
VALID_NOT_NULL = ("a.attnotnull and not exists (select 1 from pg_constraint c where "
                  "c.conrelid = a.attrelid and c.contype = 'n' and c.conkey = array[a.attnum] "
                  "and not c.convalidated)")
# True when column (attrelid, attnum) is NOT NULL on the table and on every table of its family
# (partitions, inheritance children: their rows are the table's).
NOT_NULL_SQL = f"""with recursive fam(oid) as (select %(rel)s::oid
    union select i.inhrelid from pg_inherits i join fam on i.inhparent = fam.oid)
  select coalesce(bool_and({VALID_NOT_NULL}), false)
  from fam join pg_attribute a on a.attrelid = fam.oid and not a.attisdropped
    and a.attname = (select attname from pg_attribute where attrelid = %(rel)s
                     and attnum = %(att)s)"""  # noqa: S608 -- constant text


def _bare_columns(an: Analysis, row_tree: Any) -> dict[str, tuple[int, int, int]]:
    """(table index, relation OID, attnum) of each aggregate argument (probe column ``x<i>``)
    that is a bare column of a base table of the FROM on no NULL-extended side."""
    top = next(nodetree.queries(row_tree), None)
    if top is None:
        return {}
    rtable = top.get("rtable") or []
    refs: dict[str, int] = {}
    for j, t in enumerate(an.tables):  # FROM's tables first, then the semi-joins'
        refs.setdefault(t.ref, j)
    linear = an.outer.linear if an.outer is not None else None
    found = {}
    for entry in top.get("targetList") or []:
        name, var = str(entry.get("resname") or ""), entry.get("expr")
        if not name.startswith("x") or not isinstance(var, dict) or var["_"] != "VAR" \
                or var.get("varlevelsup") not in ("0", None):
            continue
        index = int(var["varno"])
        if not 1 <= index <= len(rtable) or rtable[index - 1].get("rtekind") != "0":
            continue
        rte = rtable[index - 1]
        j = refs.get(str((rte.get("eref") or {}).get("aliasname")))
        if j is None or (linear is not None and j not in linear):
            continue
        found[name] = (j, int(rte["relid"]), int(var["varattno"]))
    return found


def never_null(conn: psycopg.Connection, an: Analysis, row_tree: Any,
               tables: list[Any]) -> frozenset[str]:
    """The aggregate arguments (probe columns ``x<i>``) that are never NULL, and mark their
    columns in ``tables`` (:class:`streaming_views.resolve.TableInfo`) as relied upon.

    Only for aggregates without DISTINCT (their rules have a not-null counter)."""
    if an.kind != "aggregate":
        return frozenset()
    plain = {f"x{i}" for i, c in enumerate(an.aggs) if not c.distinct}
    relied: set[tuple[int, int]] = set()
    out = set()
    checked: dict[tuple[int, int], bool] = {}
    for name, (j, rel, att) in _bare_columns(an, row_tree).items():
        info = next((t for t in tables if t.index == j), None)
        if name not in plain or info is None or info.oid != rel or info.relkind not in "rp":
            continue
        if (rel, att) not in checked:
            row = conn.execute(NOT_NULL_SQL, {"rel": rel, "att": att}).fetchone()
            checked[(rel, att)] = bool(row and row[0])
        if checked[(rel, att)]:
            out.add(name)
            relied.add((rel, att))
    for t in tables:  # a self-join's roles: the columns of every role of the table
        t.columns = [dataclasses.replace(c, notnull=True) if (t.oid, c.attnum) in relied else c
                     for c in t.columns]
    return frozenset(out)
