# ruff: noqa: S608 -- generated SQL: identifiers quoted with psycopg.sql / q(), user expressions
# come deparsed from PostgreSQL's own parse tree (pglast).
"""Temporal filters on the embedded engine: the clock, the window, the edges and the tick.

A view with a temporal filter (:mod:`streaming_views.temporal`) is maintained straight from its
timed table, with the validity interval ``[from, until]`` of a row evaluated against the clock:

* its change-log triggers sit on the timed table (like any base table's) and log only the rows
  valid at the clock's time (:func:`log_filter`, pushed into the log statements by
  :func:`streaming_views.changelog.pushed_filter`): a write pays one trigger level, as for any view;
  the clock row is read ``FOR KEY SHARE``, so a tick waits for the writes in flight and a write
  for the tick in flight;
* everywhere else (the build, the recompute of a group, the other tables' deltas) the view reads
  the timed table through its *window*, a subquery of the rows valid at the clock's time written
  into the generated SQL (:func:`inline_window`; not a SQL view, which would make PostgreSQL
  refuse to drop or retype the table's columns) — nothing is copied;
* ``tidemark.live_clock`` holds the clock (one row). ``tidemark.live_tick([at])`` moves it forward
  (to ``clock_timestamp()`` by default; never backwards) and calls each temporal view's
  ``<suffix>__tm_tick(prev, at)``, which logs the rows crossing the window's edges — valid at
  ``prev`` but not at ``at`` (sign -1) and valid at ``at`` but not at ``prev`` (sign +1) — into
  the view's change log, so the view's own commit-time maintenance applies them as a delta.
  The edges are found through a B-tree index (the *expiry index*, created at deploy when the
  table has none): a bound ``col``, a cast of it, or ``col AT TIME ZONE '<zone>'``, with or
  without ``+``/``- <interval>``, is inverted to a range of ``col`` or of that expression
  (:mod:`streaming_views.edges`): O(rows expiring or admitted). Another bound expression is
  still exact, through a scan of the timed table per tick.

The one-machine stack ticks every second; ``tidemark views tick`` ticks by hand. A view is its
query with ``mz_now()`` replaced by the clock's time
(:func:`streaming_views.temporal.oracle_query`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from streaming_views.astutil import deparse, q
from streaming_views.bounds import (
    CHECK_FUNCTION,
    bound_value,
    count_sql,
    guard_sql,
    logged,
    safe_value,
)
from streaming_views.bounds import functions as bound_functions
from streaming_views.changes import note_changes
from streaming_views.edges import (
    TIME_TYPES,
    Edge,
    edge,
    expiry_indexes,
    tick_range,
    window_range,
    zone_functions,
)
from streaming_views.errors import DeployError, UnsupportedViewError, ViewDefinitionError
from streaming_views.session import set_clauses
from streaming_views.temporal import TEMPORAL_SCHEMA, Temporal

EPSILON = "interval '1 microsecond'"
CLOCK = "(SELECT now FROM tidemark.live_clock WHERE id)"
LOCKED_CLOCK = "(SELECT now FROM tidemark.live_clock WHERE id FOR KEY SHARE)"
# A log statement of the timed table reads the clock (and locks it) once, when the first row
# reaches the comparison: a CTE read on demand, instead of a locking subquery per comparison
LOGGED_CLOCK = "(SELECT now FROM __tm_clock)"
CLOCK_CTE = f"WITH __tm_clock AS MATERIALIZED {LOCKED_CLOCK} "
# The one-row UPDATE's log statement (one row a side) reads the clock fewer times:
# * a timed table with no other conjunct of WHERE on it (every row reaches the comparison, so
#   every such statement locks the clock anyway): as a FROM item, its two rows LATERAL to it —
#   no InitPlan, and a statement without sublinks, whose cached plan is not walked expression
#   by expression at every execution (AcquirePlannerLocks): ~22k instructions less;
# * else, still on demand (a row failing the rest of WHERE leaves the clock unlocked, a tick
#   does not wait for it): each side's comparisons in one sub-SELECT of the CTE (a SubPlan per
#   side instead of an InitPlan per comparison): ~6k less (bench/ivm_instructions.py --view
#   sliding_5min, round 38).
CLOCK_FROM = f"{LOCKED_CLOCK} AS __tm_c"
FROM_CLOCK = "__tm_c.now"
ONCE_CLOCK = "__tm_k.now"  # the correlated form: log_filter reads the CTE as __tm_k

RUNTIME_DDL = [
    """create table if not exists tidemark.live_clock (
        id boolean primary key default true check (id),
        now timestamptz not null)""",
    "insert into tidemark.live_clock (id, now) values (true, clock_timestamp()) "
    "on conflict (id) do nothing",
    """create table if not exists tidemark.live_temporal (
        suffix text primary key,
        view_name text not null,
        visible text not null,
        pending text)""",
    # engine 4 kept copies (pending: their admission table); engine 5 reads the timed table
    "alter table tidemark.live_temporal alter column pending drop not null",
    "alter table tidemark.live_temporal add column if not exists indexes text[] not null "
    "default '{}'",
    # rows of the timed table whose bound cannot be computed (streaming_views.bounds)
    "alter table tidemark.live_temporal add column if not exists bad bigint not null default 0",
    CHECK_FUNCTION,
    *zone_functions(),
    f"""create or replace function tidemark.live_tick(p_at timestamptz default null)
    returns bigint language plpgsql {set_clauses()} as $f$
declare
  v_at timestamptz := coalesce(p_at, clock_timestamp());
  v_prev timestamptz;
  r record;
  v_rows bigint := 0;
  v_k bigint;
begin
  insert into tidemark.live_clock (id, now) values (true, v_at) on conflict (id) do nothing;
  -- FOR UPDATE: waits for the writes in flight (their log statements read the clock FOR KEY
  -- SHARE), so the edges below see every row logged at the old time
  select now into v_prev from tidemark.live_clock where id for update;
  if v_at <= v_prev then
    return 0;  -- time never moves backwards
  end if;
  update tidemark.live_clock set now = v_at where id;
  for r in select suffix from tidemark.live_temporal where pending is null order by suffix loop
    continue when to_regproc(format('{TEMPORAL_SCHEMA}.%I', r.suffix || '__tm_tick')) is null;
    execute format('select {TEMPORAL_SCHEMA}.%I($1, $2)', r.suffix || '__tm_tick')
      into v_k using v_prev, v_at;
    v_rows := v_rows + v_k;
  end loop;
  return v_rows;
end $f$""",
]


@dataclass(frozen=True)
class TickResult:
    """One tick: the clock's new time and the rows expired or admitted (all views)."""

    at: datetime
    rows: int


def _rel(name: str) -> sql.Composable:
    return sql.Identifier(TEMPORAL_SCHEMA, name)


def interval_sql(t: Temporal, *, safe: bool = True) -> tuple[str, str]:
    """(from, until) of a row as timestamptz SQL over the timed table aliased ``t.ref``; NULL
    when a bound is NULL (the row is never valid, as ``mz_now() <= NULL`` is never true). A
    timestamp or date bound is read as UTC (the maintenance runs with TimeZone UTC pinned).
    With ``safe`` (and a compiled guard), a bound that cannot be computed is NULL too
    (:mod:`streaming_views.bounds`) instead of raising."""
    parts: dict[str, list[str]] = {"from": [], "until": []}
    nulls = []
    for k, bound in enumerate(t.bounds):
        expr = deparse(bound.expr)
        value = bound_value(expr, bound.kind, bound.strict)
        if safe and t.guard is not None:
            value = safe_value(t, k, value)
            nulls.append(f"{value} IS NULL")
        else:
            nulls.append(f"({expr}) IS NULL")
        parts[bound.kind].append(value)
    low = f"greatest({', '.join(parts['from'])})" if parts["from"] else "'-infinity'::timestamptz"
    high = f"least({', '.join(parts['until'])})" if parts["until"] else "'infinity'::timestamptz"
    guard = " OR ".join(nulls)
    return (f"(CASE WHEN {guard} THEN NULL ELSE {low} END)",
            f"(CASE WHEN {guard} THEN NULL ELSE {high} END)")


def valid_sql(t: Temporal, at: str, *, safe: bool = True) -> str:
    """Condition: the row (aliased ``t.ref``) is valid at time ``at`` — each bound compared
    with ``at``, not the interval of :func:`interval_sql`: the same rows are TRUE (a NULL
    bound makes the conjunction NULL or false, never valid), with a shorter expression for
    every statement that starts (a log statement compiles it for the old and the new row)."""
    parts = []
    for k, bound in enumerate(t.bounds):
        value = bound_value(deparse(bound.expr), bound.kind, bound.strict)
        if safe and t.guard is not None:
            value = safe_value(t, k, value)
        parts.append(f"{value} {'<=' if bound.kind == 'from' else '>='} {at}")
    return f"({' AND '.join(parts)})"


def log_filter(cv: Any, j: int, sign: str = "1", clock: str = LOGGED_CLOCK) -> str | None:
    """For :func:`streaming_views.changelog.pushed_filter`: when base table ``j`` is the view's
    timed table, the condition its change-log triggers add — valid at the clock's time, the
    clock read ``FOR KEY SHARE`` (see the module docstring) once per statement (from
    :data:`CLOCK_CTE`, see :func:`is_timed`); rows of the transition table of
    ``sign`` (1: new, -1: old) whose bound cannot be computed are counted and left out.
    ``clock``: the clock's SQL (:data:`FROM_CLOCK` in a statement reading :data:`CLOCK_FROM`;
    :data:`ONCE_CLOCK`: the comparisons in one sub-SELECT of :data:`CLOCK_CTE`)."""
    if not is_timed(cv, j):
        return None
    t = cv.analysis.temporal
    valid = valid_sql(t, clock, safe=False)
    if clock == ONCE_CLOCK:
        valid = f"(SELECT {valid} FROM __tm_clock AS __tm_k)"
    return valid if t.guard is None else logged(t, valid, sign)


def is_timed(cv: Any, j: int) -> bool:
    """Whether base table ``j`` is the view's timed table: its log statements filter with
    :func:`log_filter`, reading the clock from the CTE :data:`CLOCK_CTE` they begin with."""
    t = cv.analysis.temporal
    return t is not None and _is_timed(t, cv.tables[j])


def _is_timed(t: Temporal, table: Any) -> bool:
    return table.ref == t.ref and (table.schema, table.name) == (t.schema, t.name)


def _check_bounds(conn: psycopg.Connection, t: Temporal, path: str) -> None:
    """Refuse a bound that is not a timestamp, timestamptz or date."""
    for bound in t.bounds:
        expr = deparse(bound.expr)
        try:
            with conn.transaction():
                cur = conn.execute(sql.SQL("select {} from {} as {} limit 0").format(
                    sql.SQL(expr), sql.Identifier(t.schema, t.name), sql.Identifier(t.ref)))
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ViewDefinitionError(f"{path}: the temporal filter's bound {expr} (mz_now() "
                                      f"or @retention) over {t.schema}.{t.name}: {first}"
                                      ) from None
        oid = cur.description[0].type_code if cur.description else 0
        if oid not in TIME_TYPES:
            raise UnsupportedViewError(
                f"mz_now() compared with {expr}", "the embedded engine's clock is a "
                "timestamptz: the bound must be a timestamp, timestamptz or date.", path=path,
                rewrite="convert it, e.g. to_timestamp(ms / 1000.0) for epoch milliseconds.")


def window_marker(t: Temporal) -> str:
    """How the timed table's FROM item deparses once :func:`streaming_views.temporal.
    read_through_window` swapped it (a name no relation has)."""
    return deparse(ast.RangeVar(schemaname=TEMPORAL_SCHEMA, relname=t.visible, inh=True,
                                relpersistence="p"))


def inline_window(from_sql: str, t: Temporal | None) -> str:
    """``from_sql`` (a deparsed FROM list) reading the timed table through its *window*: a
    subquery of the rows valid at the clock's time, written out in place (not a SQL view: a
    view would make PostgreSQL refuse to drop or retype the table's columns)."""
    if t is None:
        return from_sql
    rel = sql.Identifier(t.schema, t.name).as_string(None)
    ranged = f"{t.window_range} AND " if t.window_range else ""
    window = (f"(SELECT {q(t.ref)}.* FROM {rel} AS {q(t.ref)} WHERE {ranged}"
              f"{valid_sql(t, CLOCK)})")
    return from_sql.replace(window_marker(t), window)


def ensure_inputs(conn: psycopg.Connection, temporal: Temporal | None, path: str
                  ) -> tuple[str | None, str | None]:
    """Check the timed table and the bounds of ``temporal``; called by the compiler before it
    resolves the view. Returns the guard of rows whose bounds cannot raise
    (:func:`streaming_views.bounds.guard_sql`) and the window's index range
    (:func:`streaming_views.edges.window_range`); (None, None) without a temporal filter.

    Raises:
        ViewDefinitionError: the timed table does not exist.
        UnsupportedViewError: a bound has a wrong type.
    """
    if temporal is None:
        return None, None
    rel = sql.Identifier(temporal.schema, temporal.name)
    if conn.execute("select to_regclass(%s)", (rel.as_string(None),)).fetchone()[0] is None:
        from streaming_views.errors import ViewDefinitionError
        raise ViewDefinitionError(f"{path}: relation {temporal.qualified} does not exist; "
                                  "load the source table first.")
    _check_bounds(conn, temporal, path)
    return guard_sql(conn, temporal), window_range(conn, temporal, CLOCK)


def tick_function(conn: psycopg.Connection, cv: Any, t: Temporal) -> tuple[str, list[Edge]]:
    """CREATE FUNCTION ``<suffix>__tm_tick(p_prev, p_at)``: log the rows of the timed table
    crossing the window's edges between the two times into the view's change log (and register
    the view's maintenance at commit, as a write does); return how many."""
    from streaming_views.changelog import BATCH_SIGN, BIG_DELTA, batchable, log_table
    from streaming_views.notes import register
    from streaming_views.triggers import function_name
    j = next(i for i, table in enumerate(cv.tables) if _is_timed(t, table))
    ref = q(t.ref)
    rel = sql.Identifier(t.schema, t.name).as_string(conn)
    cols = [q(c.name) for c in cv.resolved.tables[j].columns]
    named = "".join(f", {ref}.{c} AS __x{k}" for k, c in enumerate(cols))
    low, high = interval_sql(t)
    edges = {kind: [edge(conn, t, b) for b in t.bounds if b.kind == kind]
             for kind in ("from", "until")}
    parts = []
    if edges["until"]:  # valid at p_prev, not at p_at (p_at > p_prev)
        cond = f"{low} <= p_prev AND {high} >= p_prev AND {high} < p_at"
        rng = tick_range(edges["until"], ref, "p_prev", "p_at")
        parts.append(f"SELECT -1::smallint AS __tm_sign{named} FROM {rel} AS {ref} WHERE "
                     + (f"{rng} AND " if rng else "") + cond)
    if edges["from"]:  # valid at p_at, not at p_prev
        cond = f"{low} > p_prev AND {low} <= p_at AND {high} >= p_at"
        rng = tick_range(edges["from"], ref, "p_prev", "p_at")
        parts.append(f"SELECT 1::smallint AS __tm_sign{named} FROM {rel} AS {ref} WHERE "
                     + (f"{rng} AND " if rng else "") + cond)
    xs = [f"__x{k}" for k in range(len(cols))]
    plain = (f"INSERT INTO {log_table(cv, j)} ({', '.join(['__tm_tx', '__tm_sign', *cols])}) "
             f"SELECT pg_current_xact_id(), __tm_sign{''.join(f', {x}' for x in xs)} FROM __e")
    if batchable(cv, j):  # many rows: one batch row of arrays, applied as a large delta
        arrays = ", ".join(["array_agg(__tm_sign)", *(f"array_agg({x})" for x in xs)])
        target = ", ".join(["__tm_tx", "__tm_sign", "__tm_bs",
                            *(f"__tm_b{k}" for k in range(len(cols)))])
        writes = (f"__plain AS ({plain} WHERE (SELECT n FROM __n) <= {BIG_DELTA}), "
                  f"__batch AS (INSERT INTO {log_table(cv, j)} ({target}) SELECT "
                  f"pg_current_xact_id(), {BATCH_SIGN}, {arrays} FROM __e "
                  f"HAVING count(*) > {BIG_DELTA})")
    else:
        writes = f"__plain AS ({plain})"
    body = "v_n := 0;\n"
    if parts:
        body = (f"WITH __e AS MATERIALIZED ({' UNION ALL '.join(parts)}), "
                f"__n AS (SELECT count(*) AS n FROM __e), {writes} "
                f"SELECT n INTO v_n FROM __n;\nIF v_n > 0 THEN\n{register(cv, j)}\nEND IF;\n")
    name = function_name(cv, "tm_tick")
    create = (f"CREATE FUNCTION {name}(p_prev timestamptz, p_at timestamptz) RETURNS bigint "
              f"LANGUAGE plpgsql SECURITY DEFINER {set_clauses()} AS $tm$\nDECLARE\n"
              f"v_n bigint; v_p text; v_b text; v_first boolean;\nBEGIN\n{body}RETURN v_n;\n"
              f"END\n$tm$")
    return create, [e for es in edges.values() for e in es if e is not None]


def install_inputs(conn: psycopg.Connection, cv: Any) -> None:
    """Create the clock, the expiry indexes and the tick function of ``cv``'s temporal
    filter and register it with the tick; inside the deploy's transaction, before the view's
    state is built (the timed table is locked)."""
    t = cv.analysis.temporal
    if t is None:
        return
    for stmt in RUNTIME_DDL:
        conn.execute(stmt)  # type: ignore[arg-type]
    if t.guard is not None:
        for stmt in bound_functions(conn, t, set_clauses()):
            conn.execute(stmt)  # type: ignore[arg-type]
    create, edges = tick_function(conn, cv, t)
    conn.execute(create)  # type: ignore[arg-type]
    indexes = expiry_indexes(conn, t, edges)
    conn.execute("insert into tidemark.live_temporal (suffix, view_name, visible, pending, "
                 "indexes) values (%s, %s, %s, null, %s) on conflict (suffix) do update set "
                 "view_name = excluded.view_name, visible = excluded.visible, pending = null, "
                 "indexes = excluded.indexes", (cv.suffix, cv.name, t.visible, indexes))
    if t.guard is not None:
        from streaming_views.changelog import timed_conjuncts
        conn.execute(count_sql(t, timed_conjuncts(cv)))  # type: ignore[arg-type]


def drop_inputs(cur: psycopg.Cursor, suffix: str) -> None:
    """Drop engine 4's copies of ``suffix`` (if any), forget it, and drop the
    expiry indexes no other temporal view relies on (its tick function goes with the view's
    other ``<suffix>__`` functions)."""
    if cur.execute("select to_regclass('tidemark.live_temporal')").fetchone()[0] is None:
        return
    for name in (f"{suffix}__tv", f"{suffix}__tp"):
        kind = cur.execute("select c.relkind from pg_class c join pg_namespace n on n.oid = "
                           "c.relnamespace where n.nspname = %s and c.relname = %s",
                           (TEMPORAL_SCHEMA, name)).fetchone()
        if kind is not None:
            what = "view" if kind[0] == "v" else "table"
            cur.execute(sql.SQL(f"drop {what} {{}}").format(_rel(name)))  # type: ignore[arg-type]
    row = cur.execute("delete from tidemark.live_temporal where suffix = %s returning indexes",
                      (suffix,)).fetchone()
    for index in (row[0] if row else []) or []:
        used = cur.execute("select 1 from tidemark.live_temporal where %s = any(indexes)",
                           (index,)).fetchone()
        if used is None:
            cur.execute(f"drop index if exists {index}")  # type: ignore[arg-type]


def clock(conn: psycopg.Connection) -> datetime | None:
    """The clock's time (the last tick), or None before any temporal view was deployed."""
    if conn.execute("select to_regclass('tidemark.live_clock')").fetchone()[0] is None:
        return None
    row = conn.execute("select now from tidemark.live_clock where id").fetchone()
    return row[0] if row else None


def tick(dsn_or_conn: str | psycopg.Connection, at: datetime | None = None) -> TickResult | None:
    """Move the clock to ``at`` (default: now) and apply every due expiry and admission.

    Returns:
        The tick, or None when no temporal view is deployed (nothing to do).

    Raises:
        DeployError: the database cannot be reached or the tick fails.
    """
    try:
        if isinstance(dsn_or_conn, str):
            with psycopg.connect(dsn_or_conn, autocommit=True) as conn:
                return _tick(conn, at)
        return _tick(dsn_or_conn, at)
    except psycopg.Error as exc:
        raise DeployError(f"tick of the live views' clock failed: {str(exc).strip()}") from None


def _tick(conn: psycopg.Connection, at: datetime | None) -> TickResult | None:
    if conn.execute("select to_regnamespace('tidemark')").fetchone()[0] is None:
        return None  # no live view was ever deployed here
    with conn.transaction():
        if conn.execute("select to_regproc('tidemark.live_tick')").fetchone()[0] is None:
            for stmt in RUNTIME_DDL:
                conn.execute(stmt)  # type: ignore[arg-type]
        rows = conn.execute("select tidemark.live_tick(%s)", (at,)).fetchone()[0]
        now = conn.execute("select now from tidemark.live_clock where id").fetchone()[0]
    note_changes(conn)  # the views' changed_at (streaming_views.changes), after the tick
    return TickResult(now, int(rows))
