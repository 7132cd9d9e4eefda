# ruff: noqa: S608 -- generated SQL: identifiers quoted with q(), user expressions come deparsed
# from PostgreSQL's own parse tree (pglast).
"""Temporal-filter bounds that cannot be computed for a row (Materialize: the error goes to the
view, not to the writer).

A bound such as ``f.ts + f.iv`` raises for some rows (``timestamp out of range``, SQLSTATE
22008: ``'infinity' + '-infinity'::interval``, a finite sum past 294276 AD, a date past the
timestamp range). The query raises then too (when its plan computes that bound); the write
must not. So:

* a cheap *guard* (:func:`guard_sql`, built at compile time from the bound's operands' types)
  holds for every row whose bounds cannot overflow: every time operand finite and between the
  years 1000 and 200000, every interval or day-count operand within about a hundred years, at
  most one time operand in a bound made of ``+``, ``-``, casts, ``AT TIME ZONE '<a known
  zone>'`` (which moves a time by less than a day) and ``date_trunc('<a known unit>', x)``.
  Ordinary rows take the expressions as they are — no subtransaction;
* the other rows (the guard fails, or a bound of another shape) go to the view's
  ``<suffix>__tm_bad(sign, <the bounds' columns>)``, which evaluates the bounds in an
  exception block (class 22 only). A row whose bound raises is never valid (not logged, not
  in the window, never an edge of a tick) and is counted in ``tidemark.live_temporal.bad``
  (+1 inserted, -1 deleted; a TRUNCATE's rebuild and a deploy count the table again) when the
  other conjuncts of WHERE over the timed table alone hold for it — tested first: a row they
  leave out never reaches the view, and the query need not compute its bound (``... and f.b``
  with ``b`` false). Joins are not followed: a row no other table's row joins still counts;
* reading ``live.<view>`` while the count is above zero raises SQLSTATE 22008 naming the view,
  the table and the bound (:func:`check_sql`; the view reads the count itself, once per read,
  and calls ``tidemark.live_temporal_raise`` only when it is above zero), until the rows are
  fixed or deleted; so does a view over it. The window and the tick evaluate such a row's
  bounds through ``<suffix>__tm_bound(k, <columns>)`` (NULL when it raises).
"""

from __future__ import annotations

from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from streaming_views.astutil import deparse, q, walk
from streaming_views.edges import trunc_of, valid_unit, valid_zone, zone_of
from streaming_views.guard import DEPLOYING

STATE = "tidemark_state"
TIME = {1184: "timestamptz", 1114: "timestamp", 1082: "date"}
INTERVAL = 1186
INTEGERS = {20, 21, 23}
MAX_LEAVES = 8
# with at most one time operand in [1000, 200000] AD and at most 8 others of at most ~110
# years each, every partial sum stays inside PostgreSQL's range (4713 BC .. 294276 AD)
TIME_RANGE = ("1000-01-01", "200000-01-01")
INTERVAL_GUARD = ("({x} BETWEEN interval '-100 years' AND interval '100 years' "
                  "AND extract(year FROM {x}) BETWEEN -100 AND 100 "
                  "AND extract(day FROM {x}) BETWEEN -40000 AND 40000)")
INTEGER_GUARD = "({x} BETWEEN -40000 AND 40000)"


def _leaves(node: Any) -> list[Any] | None:
    """The operands of a bound made of ``+``, ``-`` and casts; None for another shape."""
    if isinstance(node, ast.A_Expr) and node.name[-1].sval in {"+", "-"}:
        sides = [s for s in (node.lexpr, node.rexpr) if s is not None]
        found: list[Any] = []
        for side in sides:
            more = _leaves(side)
            if more is None:
                return None
            found += more
        return found
    # AT TIME ZONE '<zone>' moves a time by less than a day, date_trunc('<unit>', x) by less
    # than a unit (at most a millennium: still inside the range from the year 1000 on)
    wrapped = zone_of(node) or trunc_of(node)
    if wrapped is not None:
        return _leaves(wrapped[1])
    if isinstance(node, ast.TypeCast) and not isinstance(node.arg, ast.A_Const):
        return (_leaves(node.arg) if isinstance(node.arg, ast.A_Expr | ast.ColumnRef)
                or (zone_of(node.arg) or trunc_of(node.arg)) is not None else None)
    if isinstance(node, ast.ColumnRef | ast.A_Const | ast.TypeCast):
        return [node]
    return None


def guard_sql(conn: psycopg.Connection, t: Any) -> str:
    """The condition holding for rows (of ``t``'s timed table, aliased ``t.ref``) whose bounds
    cannot raise; ``false`` when a bound has another shape (every row takes the slow path)."""
    leaves: dict[str, Any] = {}
    for bound in t.bounds:
        nodes = list(walk(bound.expr))
        if not all(valid_zone(conn, z[0]) for n in nodes if (z := zone_of(n)) is not None) \
                or not all(valid_unit(conn, u[0]) for n in nodes
                           if (u := trunc_of(n)) is not None):
            return "false"
        found = _leaves(bound.expr)
        if found is None or len(found) > MAX_LEAVES + 1:
            return "false"
        times = 0
        for leaf in found:
            text = deparse(leaf)
            oid = _type(conn, t, text)
            if oid is None and isinstance(leaf, ast.A_Const):
                text, oid = f"({text})::interval", INTERVAL  # '5 minutes' next to a time
                if _type(conn, t, text) is None:
                    return "false"
            times += oid in TIME
            if oid not in TIME and oid != INTERVAL and oid not in INTEGERS:
                return "false"
            leaves[text] = oid
        if times > 1:
            return "false"
    parts = []
    for text, oid in leaves.items():
        if oid in TIME:
            lo, hi = (f"{TIME[oid]} '{v}'" for v in TIME_RANGE)
            check = f"({text}) BETWEEN {lo} AND {hi}"
        else:
            check = (INTERVAL_GUARD if oid == INTERVAL else INTEGER_GUARD).format(x=f"({text})")
        parts.append(f"(({text}) IS NULL OR {check})")
    return "(" + " AND ".join(parts or ["true"]) + ")"


def _type(conn: psycopg.Connection, t: Any, text: str) -> int | None:
    """The type OID of expression ``text`` over the timed table; None when it has none."""
    try:
        with conn.transaction():
            cur = conn.execute(sql.SQL("select {} from {} as {} limit 0").format(
                sql.SQL(text), sql.Identifier(t.schema, t.name), sql.Identifier(t.ref)))
    except psycopg.Error:
        return None
    oid = cur.description[0].type_code if cur.description else None
    return None if oid == 705 else oid  # unknown: a bare string constant


def bound_value(expr: str, kind: str, strict: bool) -> str:
    """A bound's value as a timestamptz (strict bounds moved by one microsecond inside)."""
    value = f"({expr})::timestamptz"
    if strict:
        value = f"({value} {'+' if kind == 'from' else '-'} interval '1 microsecond')"
    return value


def function(t: Any, what: str) -> str:
    """The qualified name of the view's ``<suffix>__tm_<what>`` function."""
    return f"{q(STATE)}.{q(f'{t.owner}__tm_{what}')}"


def columns(t: Any) -> tuple[str, ...]:
    """The timed table's columns the bounds read (the slow path's arguments)."""
    names = {n.fields[-1].sval for b in t.bounds for n in walk(b.expr)
             if isinstance(n, ast.ColumnRef) and isinstance(n.fields[-1], ast.String)}
    return tuple(sorted(names))


def _args(t: Any) -> str:
    return "".join(f", {q(t.ref)}.{q(c)}" for c in t.columns)


def safe_value(t: Any, k: int, value: str) -> str:
    """Bound ``k``'s ``value`` when the row passes the guard, else through the view's
    ``__tm_bound`` (NULL when it cannot be computed: the row is never valid)."""
    return (f"(CASE WHEN {t.guard} THEN {value} ELSE {function(t, 'bound')}"
            f"({k}{_args(t)}) END)")


def logged(t: Any, valid: str, sign: str) -> str:
    """The change-log filter: ``valid`` (over the raw bounds) for rows passing the guard, the
    slow path (counting rows whose bound raises, with ``sign``) for the others. ``valid`` is
    written once (each copy is set up, and its clock subqueries locked and read, per statement):
    evaluated when the guard holds or, after it, when the bound does not raise."""
    return (f"(CASE WHEN (CASE WHEN {t.guard} THEN true ELSE {function(t, 'bad')}({sign}"
            f"{_args(t)}) IS NOT TRUE END) THEN {valid} ELSE false END)")


def _row_query(t: Any, select: str) -> str:
    row = ", ".join(f"${n + 2} AS {q(c)}" for n, c in enumerate(t.columns)) or "1"
    return f"SELECT {select} FROM (SELECT {row}) AS {q(t.ref)}"


def functions(conn: psycopg.Connection, t: Any, set_clauses: str) -> list[str]:
    """CREATE FUNCTION ``<suffix>__tm_bound(k, <columns>)`` and ``<suffix>__tm_bad(sign,
    <columns>)`` (the bounds' columns, typed as in the timed table)."""
    rel = sql.Identifier(t.schema, t.name).as_string(None)
    types = "".join(", " + conn.execute(
        "select format_type(atttypid, atttypmod) from pg_attribute where attrelid = "
        "%s::regclass and attname = %s and not attisdropped", (rel, c)).fetchone()[0]
        for c in t.columns)
    values = [bound_value(deparse(b.expr), b.kind, b.strict) for b in t.bounds]
    whens = "".join(f"WHEN {k} THEN ({_row_query(t, v)}) " for k, v in enumerate(values))
    suffix = sql.Literal(t.owner).as_string(None)
    bound = (f"CREATE FUNCTION {function(t, 'bound')}(p_k int{types}) RETURNS "
             f"timestamptz LANGUAGE plpgsql STABLE {set_clauses} AS $tm$\nBEGIN\n"
             f"RETURN CASE p_k {whens}END;\n"
             f"EXCEPTION WHEN data_exception THEN\nRETURN NULL;\nEND\n$tm$")
    bad = (f"CREATE FUNCTION {function(t, 'bad')}(p_sign int{types}) RETURNS boolean "
           f"LANGUAGE plpgsql {set_clauses} AS $tm$\nDECLARE v timestamptz[];\nBEGIN\n"
           f"{_row_query(t, 'ARRAY[' + ', '.join(values) + ']')} INTO v;\nRETURN false;\n"
           f"EXCEPTION WHEN data_exception THEN\nIF p_sign <> 0 THEN\n"
           f"UPDATE tidemark.live_temporal SET bad = bad + p_sign WHERE suffix = {suffix};\n"
           f"END IF;\nRETURN true;\nEND\n$tm$")
    return [bound, bad]


def count_sql(t: Any, reach: str | None = None) -> str:
    """The statement counting the timed table's rows whose bound cannot be computed, among
    those passing ``reach`` (the other conjuncts of WHERE over the timed table alone: a row
    failing them never reaches the view, and the query need not compute its bound)."""
    rel = sql.Identifier(t.schema, t.name).as_string(None)
    suffix = sql.Literal(t.owner).as_string(None)
    where = f"({reach}) AND " if reach else ""
    return (f"UPDATE tidemark.live_temporal SET bad = (SELECT count(*) FROM {rel} AS {q(t.ref)} "
            f"WHERE {where}NOT {t.guard} AND {function(t, 'bad')}(0{_args(t)})) "
            f"WHERE suffix = {suffix}")


# Called by live.<view>'s read only when the view's count is above zero (the count is read by
# the view itself, as its owner: ordinary reads call no function). The engine's own reads of
# live.<inner> (a view over a live view: its deltas and rebuilds run in triggers, its deploy's
# build with the deploy's setting on) are not stopped: the outer view's state leaves the rows
# out, and reading live.<outer> raises too (its checks include its inner views').
CHECK_FUNCTION = f"""create or replace function tidemark.live_temporal_raise(
    p_view text, p_table text, p_bounds text, p_bad bigint) returns boolean
    language plpgsql stable set search_path = pg_catalog, pg_temp as $f$
begin
  if pg_trigger_depth() > 0 or current_setting('{DEPLOYING}', true) = 'on' then
    return true;
  end if;
  raise exception 'live view % cannot be computed: % row(s) of % have a temporal-filter '
    'bound out of range (%)', p_view, p_bad, p_table, p_bounds using errcode = '22008',
    hint = 'Fix or delete those rows (the query raises on them too); the view reads again '
           'once they are gone.';
end $f$"""


def check_calls(cv: Any) -> tuple[str, ...]:
    """The checks reading ``live.<view>`` makes: its own temporal filter's, and those of the
    live views it reads (transitively)."""
    calls = []
    t = cv.analysis.temporal
    if t is not None and t.guard is not None:
        args = ", ".join(sql.Literal(v).as_string(None) for v in (
            cv.name, t.qualified, ", ".join(deparse(b.expr) for b in t.bounds)))
        calls.append(f"coalesce((SELECT CASE WHEN l.bad = 0 THEN true ELSE "
                     f"tidemark.live_temporal_raise({args}, l.bad) END FROM "
                     f"tidemark.live_temporal AS l WHERE l.suffix = "
                     f"{sql.Literal(t.owner).as_string(None)}), true)")
    for table in cv.resolved.tables:
        calls += [c for c in getattr(table, "checks", ()) if c not in calls]
    return tuple(calls)


def check_sql(calls: tuple[str, ...], select: str) -> str:
    """``live.<view>``'s SELECT raising while a timed table it depends on holds rows whose
    bound cannot be computed (a one-time filter: checked once per read)."""
    return f"SELECT * FROM ({select}) AS __v WHERE {' AND '.join(calls)}"
