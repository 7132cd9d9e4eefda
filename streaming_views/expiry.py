# ruff: noqa: S608 -- generated SQL: identifiers quoted with psycopg.sql / q(), user expressions
# come deparsed from PostgreSQL's own parse tree (pglast).
"""Temporal filters on the embedded engine: the clock, the expiry index and the tick.

A view with a temporal filter (:mod:`streaming_views.temporal`) reads, instead of its timed
table, the *visible-rows table* ``tidemark_state.<view>__<hash8>__tv``: a copy of the timed
table's rows whose validity interval ``[__tm_from, __tm_until]`` holds the clock's time, with an
index on ``__tm_until`` (the expiry index). Rows valid later wait in ``<...>__tp`` with an index
on ``__tm_from`` (the admission index). Statement-level triggers on the timed table keep both
in step with its writes; the engine maintains the view over the visible-rows table like over
any base table.

``tidemark.live_clock`` holds the clock (one row). ``tidemark.live_tick([at])`` moves it forward
(to ``clock_timestamp()`` by default; never backwards) and, set-based, deletes the rows that
expired and moves in the rows admitted since the last tick: O(rows expiring or admitted) through
the two indexes, plus the engine's maintenance of those rows. The one-machine stack calls it
every second; ``tidemark views tick`` calls it by hand. A view is its query with ``mz_now()``
replaced by the clock's time (:func:`streaming_views.temporal.oracle_query`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from streaming_views.astutil import deparse, q
from streaming_views.errors import DeployError, UnsupportedViewError
from streaming_views.session import set_clauses
from streaming_views.temporal import TEMPORAL_SCHEMA, Temporal

TIME_TYPES = {1184: "{}", 1114: "({}) at time zone 'UTC'",
              1082: "(({})::timestamp at time zone 'UTC')"}
EPSILON = "interval '1 microsecond'"

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
        pending text not null)""",
    f"""create or replace function tidemark.live_tick(p_at timestamptz default null)
    returns bigint language plpgsql {set_clauses()} as $f$
declare
  v_at timestamptz := coalesce(p_at, clock_timestamp());
  v_prev timestamptz;
  r record;
  v_rows bigint := 0;
  v_k bigint;
  v_due boolean;
begin
  insert into tidemark.live_clock (id, now) values (true, v_at) on conflict (id) do nothing;
  select now into v_prev from tidemark.live_clock where id for update;
  if v_at < v_prev then
    return 0;  -- time never moves backwards
  end if;
  update tidemark.live_clock set now = v_at where id;
  for r in select visible, pending from tidemark.live_temporal order by suffix loop
    continue when to_regclass(format('{TEMPORAL_SCHEMA}.%I', r.visible)) is null;
    -- only statements with rows: each write to the copies fires the view's maintenance
    execute format('select exists (select 1 from {TEMPORAL_SCHEMA}.%I where __tm_until < $1)',
                   r.visible) into v_due using v_at;
    if v_due then
      execute format('delete from {TEMPORAL_SCHEMA}.%I where __tm_until < $1', r.visible)
        using v_at;
      get diagnostics v_k = row_count;
      v_rows := v_rows + v_k;
    end if;
    execute format('select exists (select 1 from {TEMPORAL_SCHEMA}.%I where __tm_from <= $1)',
                   r.pending) into v_due using v_at;
    if v_due then
      execute format('with m as (delete from {TEMPORAL_SCHEMA}.%I where __tm_from <= $1 '
                     'returning *) insert into {TEMPORAL_SCHEMA}.%I select * from m '
                     'where __tm_until >= $1', r.pending, r.visible) using v_at;
      get diagnostics v_k = row_count;
      v_rows := v_rows + v_k;
    end if;
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


def _key(conn: psycopg.Connection, t: Temporal) -> list[str]:
    """The timed table's primary key (or replica identity index) columns."""
    rows = conn.execute(
        "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid "
        "and a.attnum = any(i.indkey) where i.indrelid = %s::regclass "
        "and (i.indisprimary or i.indisreplident) order by i.indisprimary desc, "
        "array_position(i.indkey::int2[], a.attnum)",
        (sql.Identifier(t.schema, t.name).as_string(None),)).fetchall()
    return list(dict.fromkeys(r[0] for r in rows))


def _columns(conn: psycopg.Connection, t: Temporal) -> list[str]:
    rows = conn.execute(
        "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 "
        "and not attisdropped order by attnum",
        (sql.Identifier(t.schema, t.name).as_string(None),)).fetchall()
    return [r[0] for r in rows]


def bound_sql(conn: psycopg.Connection, t: Temporal, path: str) -> tuple[str, str]:
    """(``__tm_from``, ``__tm_until``) as SQL over the timed table aliased ``t.ref``; NULL when
    a bound is NULL (the row is never valid, as ``mz_now() <= NULL`` is never true).

    Raises:
        UnsupportedViewError: a bound is not a timestamp, timestamptz or date.
    """
    parts: dict[str, list[str]] = {"from": [], "until": []}
    nulls = []
    for bound in t.bounds:
        expr = deparse(bound.expr)
        cur = conn.execute(sql.SQL("select {} from {} as {} limit 0").format(
            sql.SQL(expr), sql.Identifier(t.schema, t.name), sql.Identifier(t.ref)))
        oid = cur.description[0].type_code if cur.description else 0
        if oid not in TIME_TYPES:
            raise UnsupportedViewError(
                f"mz_now() compared with {expr}", "the embedded engine's clock is a "
                "timestamptz: the bound must be a timestamp, timestamptz or date.", path=path,
                rewrite="convert it, e.g. to_timestamp(ms / 1000.0) for epoch milliseconds.")
        value = TIME_TYPES[oid].format(expr)
        nulls.append(f"({expr}) is null")
        if bound.strict:
            value = f"({value} {'+' if bound.kind == 'from' else '-'} {EPSILON})"
        parts[bound.kind].append(value)
    low = f"greatest({', '.join(parts['from'])})" if parts["from"] else "'-infinity'::timestamptz"
    high = f"least({', '.join(parts['until'])})" if parts["until"] else "'infinity'::timestamptz"
    guard = " or ".join(nulls)
    return (f"(case when {guard} then null else {low} end)",
            f"(case when {guard} then null else {high} end)")


def ensure_inputs(conn: psycopg.Connection, temporal: Temporal | None, path: str) -> None:
    """Create (empty, if missing) the visible-rows and pending tables of ``temporal`` so the view
    compiles over them; called by the compiler before it resolves the view.

    Raises:
        UnsupportedViewError: the timed table has no primary key, or a bound has a wrong type.
    """
    if temporal is None:
        return
    rel = sql.Identifier(temporal.schema, temporal.name)
    if conn.execute("select to_regclass(%s)", (rel.as_string(None),)).fetchone()[0] is None:
        from streaming_views.errors import ViewDefinitionError
        raise ViewDefinitionError(f"{path}: relation {temporal.qualified} does not exist; "
                                  "load the source table first.")
    key = _key(conn, temporal)
    if not key:
        raise UnsupportedViewError(
            f"temporal filter on keyless table {temporal.qualified}", "rows are expired and "
            "admitted by key, and the table has no primary key or replica identity index.",
            path=path, rewrite=f"add a primary key to {temporal.qualified}.")
    bound_sql(conn, temporal, path)
    for name, col in ((temporal.visible, "__tm_until"), (temporal.pending, "__tm_from")):
        conn.execute(sql.SQL("create table if not exists {} (like {})").format(_rel(name), rel))
        conn.execute(sql.SQL("alter table {} add column if not exists __tm_from timestamptz, "
                             "add column if not exists __tm_until timestamptz").format(_rel(name)))
        conn.execute(sql.SQL("create index if not exists {} on {} ({})").format(
            sql.Identifier(f"{name}_t"), _rel(name), sql.Identifier(col)))
        conn.execute(sql.SQL("create index if not exists {} on {} ({})").format(
            sql.Identifier(f"{name}_k"), _rel(name),
            sql.SQL(", ").join(sql.Identifier(k) for k in key)))


def install_inputs(conn: psycopg.Connection, suffix: str, view_name: str,
                   temporal: Temporal | None, path: str) -> None:
    """Fill the visible-rows and pending tables from the timed table at the clock's time and
    create the triggers that follow its writes; inside the deploy's transaction, before the
    view's state is built."""
    if temporal is None:
        return
    for stmt in RUNTIME_DDL:
        conn.execute(stmt)  # type: ignore[arg-type]
    rel = sql.Identifier(temporal.schema, temporal.name)
    conn.execute(sql.SQL("lock table {} in share row exclusive mode").format(rel))
    ensure_inputs(conn, temporal, path)
    low, high = bound_sql(conn, temporal, path)
    cols = _columns(conn, temporal)
    key = _key(conn, temporal)
    visible, pending = (_rel(temporal.visible).as_string(conn),
                        _rel(temporal.pending).as_string(conn))
    ref = q(temporal.ref)
    listed = ", ".join(q(c) for c in cols)
    picked = ", ".join(f"{ref}.{q(c)}" for c in cols)
    rows = (f"select {picked}, {low} as __tm_from, {high} as __tm_until from {{src}} as {ref}")
    now = "(select now from tidemark.live_clock where id)"

    def fill(src: str, clock: str) -> list[str]:
        return [f"insert into {visible} ({listed}, __tm_from, __tm_until) select * from "
                f"({rows.format(src=src)}) as x where x.__tm_from <= {clock} "
                f"and x.__tm_until >= {clock}",
                f"insert into {pending} ({listed}, __tm_from, __tm_until) select * from "
                f"({rows.format(src=src)}) as x where x.__tm_from > {clock} "
                f"and x.__tm_until >= x.__tm_from"]
    fn = sql.Identifier(TEMPORAL_SCHEMA, f"{suffix}__tm_follow").as_string(conn)
    _refill(conn, temporal, fill(rel.as_string(conn), now))
    body = _follow_body(visible, pending, f"({rows.format(src='__tm_new')})",
                        f"({rows.format(src='__tm_old')})", listed, cols, key,
                        "(select now from tidemark.live_clock where id for key share)")
    conn.execute(f"create function {fn}() returns trigger language plpgsql {set_clauses()} "  # type: ignore[arg-type]
                 f"as $f$\n{body}\n$f$")
    for tag, event, refs in (("i", "insert", "new table as __tm_new"),
                             ("u", "update", "old table as __tm_old new table as __tm_new"),
                             ("d", "delete", "old table as __tm_old")):
        conn.execute(sql.SQL("create trigger {} after {} on {} referencing {} for each "
                             "statement execute function {}()").format(
            sql.Identifier(f"{suffix}__tm_{tag}"), sql.SQL(event), rel, sql.SQL(refs),
            sql.SQL(fn)))
    conn.execute(sql.SQL("create trigger {} after truncate on {} for each statement execute "
                         "function {}()").format(sql.Identifier(f"{suffix}__tm_t"), rel,
                                                 sql.SQL(fn)))
    conn.execute("insert into tidemark.live_temporal (suffix, view_name, visible, pending) "
                 "values (%s, %s, %s, %s) on conflict (suffix) do update set "
                 "view_name = excluded.view_name, visible = excluded.visible, "
                 "pending = excluded.pending",
                 (suffix, view_name, temporal.visible, temporal.pending))


def _follow_body(visible: str, pending: str, new_rows: str, old_rows: str, listed: str,
                 cols: list[str], key: list[str], now: str) -> str:
    """The body of the trigger function following the timed table's writes.

    The visible-rows table holds exactly the rows valid at the clock's time, so which copies a
    statement removes, updates or adds follows from the transition tables alone (no probe of the
    copies). Each write to the copies fires the view's maintenance, so only statements with rows
    run: an UPDATE of a row that stays valid is one UPDATE of its copy. The clock row is read
    FOR KEY SHARE: a tick waits for the writes in flight, a write for the tick in flight."""
    def match(a: str, b: str) -> str:
        return " and ".join(f"{a}.{q(k)} = {b}.{q(k)}" for k in key)

    def valid(a: str) -> str:
        return f"{a}.__tm_from <= v_now and {a}.__tm_until >= v_now"
    later = "x.__tm_from > v_now and x.__tm_until >= x.__tm_from"
    old, new = f"{old_rows} as o", f"{new_rows} as x"
    leaving = (f"from {old} where {valid('o')} and not exists (select 1 from {new} where "
               f"{match('x', 'o')} and {valid('x')})")
    staying = f"from {new} where {valid('x')} and exists (select 1 from {old} where " \
              f"{match('x', 'o')} and {valid('o')})"
    entering = f"from {new} where {valid('x')} and not exists (select 1 from {old} where " \
               f"{match('x', 'o')} and {valid('o')})"
    sets = ", ".join(f"{q(c)} = x.{q(c)}" for c in [*cols, "__tm_from", "__tm_until"])
    keys = ", ".join(q(k) for k in key)
    return "\n".join([
        "declare v_now timestamptz;",
        "begin",
        f"  v_now := {now};",
        "  if tg_op = 'TRUNCATE' then",
        f"    delete from {visible}; delete from {pending}; return null;",
        "  end if;",
        "  if tg_op in ('DELETE', 'UPDATE') then",
        f"    delete from {pending} as s using __tm_old as o where {match('s', 'o')};",
        "  end if;",
        "  if tg_op = 'DELETE' then",
        f"    if exists (select 1 from {old} where {valid('o')}) then",
        f"      delete from {visible} as s where ({', '.join(f's.{q(k)}' for k in key)}) in "
        f"(select {', '.join(f'o.{q(k)}' for k in key)} from {old} where {valid('o')});",
        "    end if;",
        "  elsif tg_op = 'UPDATE' then",
        f"    if exists (select 1 {leaving}) then",
        f"      delete from {visible} as s where ({', '.join(f's.{q(k)}' for k in key)}) in "
        f"(select {', '.join(f'o.{q(k)}' for k in key)} {leaving});",
        "    end if;",
        "  end if;",
        "  if tg_op = 'UPDATE' then",
        f"    if exists (select 1 {staying}) then",
        f"      update {visible} as s set {sets} from (select x.* {staying}) as x "
        f"where {match('s', 'x')};",
        "    end if;",
        "  end if;",
        "  if tg_op in ('INSERT', 'UPDATE') then",
        f"    insert into {pending} ({listed}, __tm_from, __tm_until) select * from {new} "
        f"where {later};",
        "  end if;",
        "  if tg_op = 'INSERT' then",
        f"    if exists (select 1 from {new} where {valid('x')}) then",
        f"      insert into {visible} ({listed}, __tm_from, __tm_until) select x.* from {new} "
        f"where {valid('x')};",
        "    end if;",
        "  elsif tg_op = 'UPDATE' then",
        f"    if exists (select 1 {entering}) then",
        f"      insert into {visible} ({listed}, __tm_from, __tm_until) select x.* {entering};",
        "    end if;",
        "  end if;",
        "  return null;",
        "end"]) if keys else ""


def _refill(conn: psycopg.Connection, temporal: Temporal, statements: list[str]) -> None:
    """Empty and refill the visible-rows and pending tables with the view's triggers on them
    disabled (the caller rebuilds the view's state from them)."""
    tables = [_rel(temporal.visible), _rel(temporal.pending)]
    for table in tables:
        conn.execute(sql.SQL("alter table {} disable trigger user").format(table))
    conn.execute(sql.SQL("delete from {}; delete from {}").format(*tables))
    for stmt in statements:
        conn.execute(stmt)  # type: ignore[arg-type]
    for table in tables:
        conn.execute(sql.SQL("alter table {} enable trigger user").format(table))
        conn.execute(sql.SQL("analyze {}").format(table))  # plans probe the copies by key


def refill_inputs(conn: psycopg.Connection, temporal: Temporal | None, path: str) -> None:
    """Copy the timed table's rows valid at the clock's time again (for ``rebuild``: after
    writes made with the triggers disabled)."""
    if temporal is None:
        return
    conn.execute(sql.SQL("lock table {} in share row exclusive mode").format(
        sql.Identifier(temporal.schema, temporal.name)))
    low, high = bound_sql(conn, temporal, path)
    cols = ", ".join(q(c) for c in _columns(conn, temporal))
    ref = q(temporal.ref)
    src = sql.Identifier(temporal.schema, temporal.name).as_string(conn)
    rows = (f"select {cols}, __tm_from, __tm_until from (select {ref}.*, {low} as __tm_from, "
            f"{high} as __tm_until from {src} as {ref}) as x, tidemark.live_clock c where c.id")
    _refill(conn, temporal, [
        f"insert into {_rel(temporal.visible).as_string(conn)} ({cols}, __tm_from, __tm_until)"
        f" {rows} and x.__tm_from <= c.now and x.__tm_until >= c.now",
        f"insert into {_rel(temporal.pending).as_string(conn)} ({cols}, __tm_from, __tm_until)"
        f" {rows} and x.__tm_from > c.now and x.__tm_until >= x.__tm_from"])


def drop_inputs(cur: psycopg.Cursor, suffix: str) -> None:
    """Drop the visible-rows and pending tables of ``suffix`` and forget them (the triggers on
    the timed table go with the ``<suffix>__tm_follow`` function)."""
    if cur.execute("select to_regclass('tidemark.live_temporal')").fetchone()[0] is None:
        return
    for name in (f"{suffix}__tv", f"{suffix}__tp"):
        cur.execute(sql.SQL("drop table if exists {}").format(_rel(name)))
    cur.execute("delete from tidemark.live_temporal where suffix = %s", (suffix,))


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
    return TickResult(now, int(rows))
