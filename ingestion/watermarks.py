"""Watermarks and late events, per table with an event-time column, kept in landing.

A table's **watermark** is the largest event time landed minus its contract's allowed lateness:
every event of the table with an earlier event time counts as late. Two state tables in schema
``tidemark`` hold it:

- ``watermarks`` — one row per table: ``max_event_at``, ``watermark``, ``last_change_at`` (source
  commit time of the last batch that touched it) and the contract's lateness;
- ``late_events`` — per table and UTC day: inserts that landed after the table's watermark had
  passed the end of that day (``late_rows``, ``worst_lateness`` = commit time − event time,
  first/last landed).

The applier runs :func:`advance` once per flushed batch: one set-based statement over the batch's
staging table plus primary-key lookups into the two state rows and the checkpoint — never a scan
of the mirror or the changelog. The batch is read once (max event time, whether any insert is
behind the watermark); a second pass groups the late inserts by day only when there are some.

**Snapshots.** A snapshot's landing transaction advances the watermark of each table it lands
by the snapshot's rows, as a batch would, but records no change time: until a change of it is
streamed, the table is idle since its snapshot. The initial snapshot also sets the checkpoint's
``last_commit_at`` (a source time before the slot was created), so a first ``catch_up``, which
returns when the snapshot commits, leaves every event-time table with a watermark.

**Idle advance.** A table that has landed nothing for ``policy().idle_after`` (or never, since its
snapshot) while its source keeps committing — heartbeats are transactions too, so an idle source
commits every heartbeat — takes the source's progress as its event-time bound: its watermark is
at least ``checkpoint.last_commit_at − allowed_lateness``. Readers compute that advance on the fly
(:func:`effective_sql`); the next batch of the table folds it into the stored watermark, so a
watermark never moves back.

**Future event times** are capped: a batch advances the watermark by at most its latest source
commit time plus ``policy().future_skew``, so one row dated 2099 cannot close every day.

Both are settings (``TIDEMARK_WATERMARK_IDLE_AFTER_S``, ``TIDEMARK_WATERMARK_FUTURE_SKEW_S``):
:func:`tidemark.settings.load_settings` passes them to :func:`configure`, so the ingesting
process and every reader (status, Dagster, finality) of one stack use the same values; used on
its own, this module keeps the defaults :data:`IDLE_AFTER` and :data:`FUTURE_SKEW`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from ingestion.names import STATE_SCHEMA

IDLE_AFTER = timedelta(minutes=1)
"""A table with no change landed for this long, while its source commits, is idle."""

FUTURE_SKEW = timedelta(minutes=5)
"""How far past its source commit time an event time may advance a watermark."""



@dataclass(frozen=True)
class WatermarkPolicy:
    """How watermarks treat idle tables and future event times.

    Attributes:
        idle_after: a table with no change landed for this long, while its source commits, is
            idle (its watermark follows the source's progress).
        future_skew: how far past its source commit time an event time may advance a
            watermark.
    """

    idle_after: timedelta = IDLE_AFTER
    future_skew: timedelta = FUTURE_SKEW


_policy = WatermarkPolicy()


def configure(idle_after: timedelta | None = None, future_skew: timedelta | None = None
              ) -> WatermarkPolicy:
    """Set the policy of this process (None: keep the current value); return it."""
    global _policy
    _policy = WatermarkPolicy(idle_after if idle_after is not None else _policy.idle_after,
                              future_skew if future_skew is not None else _policy.future_skew)
    return _policy


def policy() -> WatermarkPolicy:
    """The policy in force in this process (:func:`configure`)."""
    return _policy


WATERMARKS = "watermarks"
LATE_EVENTS = "late_events"

TABLES = {
    WATERMARKS: """
        source text not null,
        table_name text not null,
        event_column text not null,
        allowed_lateness interval not null,
        max_event_at timestamptz,
        watermark timestamptz,
        last_change_at timestamptz,
        updated_at timestamptz not null default now(),
        primary key (source, table_name)""",
    LATE_EVENTS: """
        source text not null,
        table_name text not null,
        day date not null,
        late_rows bigint not null,
        worst_lateness interval not null,
        first_landed_at timestamptz not null,
        last_landed_at timestamptz not null,
        primary key (source, table_name, day)""",
}
"""State tables created by :func:`ingestion.state.ensure_state`."""


def effective_sql(w: str, c: str, lateness: sql.Composable) -> sql.Composed:
    """The watermark of row ``w`` with the idle advance from checkpoint row ``c``.

    Args:
        w: alias of the ``watermarks`` row (may be a null-extended outer-join row).
        c: alias of the source's ``checkpoints`` row.
        lateness: the table's allowed lateness (an interval expression).
    """
    wi, ci = sql.Identifier(w), sql.Identifier(c)
    return sql.SQL(
        "greatest({w}.watermark, case when coalesce({w}.last_change_at, '-infinity')"
        " < {c}.last_commit_at - {idle} then {c}.last_commit_at - {late} end)").format(
        w=wi, c=ci, idle=sql.Literal(policy().idle_after), late=lateness)


def advance_sql(stg: sql.Identifier, column: str, streamed: bool = True) -> sql.Composed:
    """The one statement :func:`advance` runs per batch (parameters named, see there)."""
    col = sql.Identifier(column)
    wm = sql.Identifier(STATE_SCHEMA, WATERMARKS)
    late = sql.Identifier(STATE_SCHEMA, LATE_EVENTS)
    ck = sql.Identifier(STATE_SCHEMA, "checkpoints")
    prev = effective_sql("w", "c", sql.SQL("%(lateness)s::interval"))
    day_end = sql.SQL("((e at time zone 'UTC')::date + 1)::timestamp at time zone 'UTC'")
    return sql.SQL("""
        with prev as (
            select {prev} as wm
            from (select %(source)s as source) s
            left join {ck} c on c.source = s.source
            left join {wm} w on w.source = s.source and w.table_name = %(table)s),
        agg as (
            select max(e) as max_e, max(coalesce(_commit_at, clock_timestamp())) as max_at,
                   coalesce(bool_or(_op = 'c' and e < (select wm from prev)), false) as any_late
            from (select {col} as e, _op, _commit_at from {stg}
                  where {col} is not null and _op in ('r', 'c', 'u')) b),
        late as (
            insert into {late} as l (source, table_name, day, late_rows, worst_lateness,
                                     first_landed_at, last_landed_at)
            select %(source)s, %(table)s, (e at time zone 'UTC')::date, count(*),
                   max(coalesce(_commit_at, clock_timestamp()) - e), clock_timestamp(),
                   clock_timestamp()
            from (select {col} as e, _commit_at from {stg}
                  where (select any_late from agg) and _op = 'c'
                    and {col} < (select wm from prev)) b
            where {day_end} <= (select wm from prev)
            group by 3
            on conflict (source, table_name, day) do update set
                late_rows = l.late_rows + excluded.late_rows,
                worst_lateness = greatest(l.worst_lateness, excluded.worst_lateness),
                last_landed_at = excluded.last_landed_at
            returning late_rows)
        insert into {wm} as w (source, table_name, event_column, allowed_lateness,
                               max_event_at, watermark, last_change_at, updated_at)
        select %(source)s, %(table)s, %(column)s, %(lateness)s::interval, agg.max_e,
               greatest(prev.wm, least(agg.max_e, agg.max_at + {skew}) - %(lateness)s::interval),
               {changed}, clock_timestamp()
        from agg, prev where agg.max_e is not null
        on conflict (source, table_name) do update set
            event_column = excluded.event_column,
            allowed_lateness = excluded.allowed_lateness,
            max_event_at = greatest(w.max_event_at, excluded.max_event_at),
            watermark = greatest(w.watermark, excluded.watermark),
            last_change_at = greatest(w.last_change_at, excluded.last_change_at),
            updated_at = excluded.updated_at
    """).format(col=col, stg=stg, prev=prev, ck=ck, wm=wm, late=late, day_end=day_end,
                skew=sql.Literal(policy().future_skew),
                changed=sql.SQL("agg.max_at" if streamed else "null::timestamptz"))


def advance(cur: psycopg.Cursor, source: str, table: str, stg: sql.Identifier, column: str,
            lateness: timedelta, streamed: bool = True) -> None:
    """Advance ``table``'s watermark by one staged batch and record its late inserts.

    Runs in the applier's landing transaction, after the batch landed.

    Args:
        cur: cursor of the landing transaction.
        source: source name.
        table: table name.
        stg: the batch's staging table.
        column: the contract's event-time column.
        lateness: the contract's allowed lateness.
        streamed: False for a snapshot's rows (``_op = 'r'``): ``last_change_at`` is left as
            it was, None for a new table, which stays idle since its snapshot.
    """
    cur.execute(advance_sql(stg, column, streamed),
                {"source": source, "table": table, "column": column, "lateness": lateness})


@dataclass(frozen=True)
class EventTable:
    """A table with an event-time column, as its contract declares it.

    Attributes:
        table: table name.
        column: event-time column.
        lateness: allowed lateness.
        warn_after: extra watermark delay (beyond the lateness) that warns.
        error_after: extra watermark delay (beyond the lateness) that is an error.
    """

    table: str
    column: str
    lateness: timedelta
    warn_after: timedelta
    error_after: timedelta


def event_tables(contracts: Any, source: str) -> list[EventTable]:
    """The tables of ``source`` whose contract names an event-time column (sorted by name)."""
    out = []
    for c in contracts if contracts is not None else ():
        if c.source == source and c.event_time:
            out.append(EventTable(c.name, c.event_time, c.allowed_lateness,
                                  c.freshness.warn_after, c.freshness.error_after))
    return sorted(out, key=lambda t: t.table)


def delay_state(delay: timedelta | None, t: EventTable) -> str:
    """``ok``, ``warn`` or ``error`` for a watermark delay (now − watermark) of table ``t``.

    The delay is at least the allowed lateness by construction; the contract's freshness
    thresholds apply to what comes on top of it. No watermark yet is ``unknown``.
    """
    if delay is None:
        return "unknown"
    extra = delay - t.lateness
    if extra > t.error_after:
        return "error"
    if extra > t.warn_after:
        return "warn"
    return "ok"


def read_watermarks(conn: psycopg.Connection, source: str, tables: list[EventTable]
                    ) -> list[dict[str, Any]]:
    """The watermark of every table in ``tables``, idle advance included.

    Returns:
        One dict per table, in order: ``table``, ``event_column``, ``allowed_lateness_s``,
        ``max_event_at``, ``watermark``, ``delay_s`` (now − watermark), ``state``
        (:func:`delay_state`), ``idle`` (advanced by the source's progress), ``late_rows`` and
        ``late_days`` (inserts landed after their day had closed, and on how many days).
    """
    if not tables:
        return []
    eff = effective_sql("w", "c", sql.SQL("t.lateness"))
    rows = conn.execute(sql.SQL(
        "select t.name, w.max_event_at, {eff}, {eff} is distinct from w.watermark,"
        " extract(epoch from clock_timestamp() - {eff}),"
        " (select coalesce(sum(l.late_rows), 0) from {late} l where l.source = %s and"
        "  l.table_name = t.name),"
        " (select count(*) from {late} l where l.source = %s and l.table_name = t.name)"
        " from unnest(%s::text[], %s::interval[]) with ordinality t(name, lateness, n)"
        " left join {ck} c on c.source = %s"
        " left join {wm} w on w.source = %s and w.table_name = t.name order by t.n").format(
        eff=eff, late=sql.Identifier(STATE_SCHEMA, LATE_EVENTS),
        ck=sql.Identifier(STATE_SCHEMA, "checkpoints"),
        wm=sql.Identifier(STATE_SCHEMA, WATERMARKS)),
        (source, source, [t.table for t in tables], [t.lateness for t in tables], source,
         source)).fetchall()
    out = []
    for t, row in zip(tables, rows, strict=True):
        _, max_event_at, watermark, idle, delay_s, late_rows, late_days = row
        delay = None if delay_s is None else timedelta(seconds=float(delay_s))
        out.append({"table": t.table, "event_column": t.column,
                    "allowed_lateness_s": t.lateness.total_seconds(),
                    "max_event_at": max_event_at, "watermark": watermark,
                    "delay_s": None if delay is None else round(delay.total_seconds(), 1),
                    "state": delay_state(delay, t), "idle": bool(idle and watermark),
                    "late_rows": int(late_rows), "late_days": int(late_days)})
    return out


def watermark_status(landing_dsn: str, source: str, contracts: Any = None
                     ) -> list[dict[str, Any]]:
    """:func:`read_watermarks` of every event-time table of ``source`` (own connection).

    Args:
        landing_dsn: landing URL.
        source: source name.
        contracts: the contract set (default: the contracts folder Tidemark uses).
    """
    if contracts is None:
        from contracts import load_contracts

        contracts = load_contracts()
    tables = event_tables(contracts, source)
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        from ingestion.state import ensure_state

        ensure_state(conn, source, read_only=True)
        return read_watermarks(conn, source, tables)
