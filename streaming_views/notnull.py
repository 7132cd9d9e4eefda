"""Aggregate arguments that can never be NULL, so their rule keeps no not-null counter.

``sum(o.amount)`` keeps, beside its sum, how many of the group's values are not NULL
(``__a<i>_nn``): the sum is NULL when none is. When the argument is a column declared ``NOT
NULL`` (a validated constraint, on the table and every partition or inheritance child), used
bare, of a table on no NULL-extended side of an outer join, that count is the group's row
count ``__count`` and the counter is left out (:mod:`streaming_views.rules`).

On a NULL-extended side (``p`` in ``orders o LEFT JOIN payments p``) such a column is NULL
exactly when the join found no row of its table: every NOT NULL bare column of that table has
the same not-null count, "the rows where ``p`` matched". Their rules keep that count once, in
the first one's counter, and the others read it (``count(p.payment_id)`` and ``sum(p.amount)``
of ``bench/ivm_vs_refresh.py``'s left_join: one counter instead of two).

The view then relies on the constraint: the column's catalog record says so (``notnull``), and
``tidemark.live_problem`` (the DDL guard, ``verify``, ``deploy``) reports the view broken when
a later ``ALTER TABLE ... ALTER COLUMN ... DROP NOT NULL`` removes it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
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
    that is a bare column of a base table of the FROM (on a NULL-extended side or not), and of
    each FILTER (``f<i>``) that is ``<such a column> IS NULL``."""
    top = next(nodetree.queries(row_tree), None)
    if top is None:
        return {}
    rtable = top.get("rtable") or []
    refs: dict[str, int] = {}
    for j, t in enumerate(an.tables):  # FROM's tables first, then the semi-joins'
        refs.setdefault(t.ref, j)
    found = {}
    for entry in top.get("targetList") or []:
        name, var = str(entry.get("resname") or ""), entry.get("expr")
        if name.startswith("f") and isinstance(var, dict) and var["_"] == "NULLTEST" \
                and var.get("nulltesttype") == "0" and var.get("argisrow") == "false":
            var = var.get("arg")  # FILTER (WHERE col IS NULL)
        elif not name.startswith("x"):
            continue
        if not isinstance(var, dict) or var["_"] != "VAR" \
                or var.get("varlevelsup") not in ("0", None):
            continue
        index = int(var["varno"])
        if not 1 <= index <= len(rtable) or rtable[index - 1].get("rtekind") != "0":
            continue
        rte = rtable[index - 1]
        j = refs.get(str((rte.get("eref") or {}).get("aliasname")))
        if j is None:
            continue
        found[name] = (j, int(rte["relid"]), int(var["varattno"]))
    return found


def never_null(conn: psycopg.Connection, an: Analysis, row_tree: Any,
               tables: list[Any]) -> tuple[frozenset[str], dict[str, int]]:
    """The aggregate arguments (probe columns ``x<i>``) that are never NULL, and those that
    are NULL exactly when their NULL-extended table did not match (``x<i>`` -> the table's
    index); mark their columns in ``tables`` (:class:`streaming_views.resolve.TableInfo`) as
    relied upon.

    Only for aggregates without DISTINCT (their rules have a not-null counter)."""
    if an.kind != "aggregate":
        return frozenset(), {}
    plain = {f"{k}{i}" for i, c in enumerate(an.aggs) if not c.distinct for k in "xf"}
    linear = an.outer.linear if an.outer is not None else None
    out: set[str] = set()
    extended: dict[str, tuple[int, int, int]] = {}
    checked: dict[tuple[int, int], bool] = {}
    bare = _bare_columns(an, row_tree)
    for name, (j, rel, att) in bare.items():
        info = next((t for t in tables if t.index == j), None)
        if name not in plain or info is None or info.oid != rel or info.relkind not in "rp":
            continue
        if (rel, att) not in checked:
            row = conn.execute(NOT_NULL_SQL, {"rel": rel, "att": att}).fetchone()
            checked[(rel, att)] = bool(row and row[0])
        if not checked[(rel, att)]:
            continue
        if name.startswith("x") and (linear is None or j in linear):
            out.add(name)
        elif linear is not None and j not in linear:
            extended[name] = (j, rel, att)
    matched = _shared(an, {name: j for name, (j, _, _) in extended.items()}, out)
    relied = {extended[name][1:] for name in matched}
    relied |= {(rel, att) for name, (_, rel, att) in bare.items() if name in out}
    for t in tables:  # a self-join's roles: the columns of every role of the table
        t.columns = [dataclasses.replace(c, notnull=True) if (t.oid, c.attnum) in relied else c
                     for c in t.columns]
    return frozenset(out), matched


def _shared(an: Analysis, matched: dict[str, int], never: set[str]) -> dict[str, int]:
    """The probe columns of ``matched`` whose rules share their table's counter, two or more
    per table: an argument (``x<i>``) of a rule without FILTER, not min/max (no not-null
    count); a FILTER (``f<i>``: the table did not match) of a count of rows (``count(*)`` or
    of an argument never NULL), which is then ``__count`` minus the counter."""
    usable = {}
    for name, j in matched.items():
        call = an.aggs[int(name[1:])]
        if name.startswith("x") and call.filter is None and call.func not in {"min", "max"} \
                or name.startswith("f") and call.func == "count" \
                and (call.arg is None or f"x{name[1:]}" in never):
            usable[name] = j
    per_table = Counter(usable.values())
    return {name: j for name, j in usable.items() if per_table[j] > 1
            and any(n.startswith("x") for n, k in usable.items() if k == j)}
