"""Late data after finality: which mart days late events touched, and the corrections they need.

Ingestion records, per table and UTC day, the inserts that landed after the table's watermark had
passed the day's end (``tidemark.late_events``, :mod:`ingestion.watermarks`). A mart day that was
reconciled (served final) before such rows landed is stale: :func:`late_corrections` finds those
days — per mart, through the tables the mart reads (:mod:`tidemark.reconciliation.finality`) —
and :func:`request_late_corrections` marks them requested, so the correction sensor re-runs each
day once (again when that run failed: :func:`~tidemark.reconciliation.days.release_failed`);
when it reconciles again it is served ``corrected`` (:mod:`.serving`).

A drift such rows explain is expected, not an error: :func:`explain_late_drift` finds, among a
comparison's drifted days, those with late rows landed after the day last reconciled (or on a
day never reconciled): the check reports them as a warning, *correction pending*.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg
from psycopg import sql

from tidemark.reconciliation.compare import Comparison
from tidemark.reconciliation.days import (
    DAYS_TABLE,
    STATE_SCHEMA,
    ensure_days_table,
    retry_due_sql,
)
from tidemark.reconciliation.finality import MartTables

LATE_TABLE = "late_events"


@dataclass(frozen=True)
class LateDay:
    """Late rows that touched one day of a mart after it was last reconciled.

    Attributes:
        day: the day.
        late_rows: late inserts of that day, over the tables the mart reads.
        worst_lateness: the largest commit time − event time among them.
        last_landed_at: when the last of them landed.
        tables: the ``source.table`` names they came from.
        reconciled_at: when the day last reconciled, as :func:`explain_late_drift` read it
            (None: never, or not read).
    """

    day: date
    late_rows: int
    worst_lateness: timedelta
    last_landed_at: datetime
    tables: tuple[str, ...]
    reconciled_at: datetime | None = None


def _late_days(conn: psycopg.Connection, tables: list[tuple[str, str]], where: sql.Composable,
               params: tuple, reconciled_at: sql.Composable = sql.SQL("null::timestamptz")
               ) -> list[LateDay]:
    """Late rows of ``tables`` per day, filtered by ``where`` (joins and WHERE on ``l``);
    ``reconciled_at``: the expression of the day's last reconciliation (over ``where``'s
    joins)."""
    rows = conn.execute(sql.SQL(
        "select l.day, sum(l.late_rows), max(l.worst_lateness), max(l.last_landed_at),"
        " array_agg(distinct l.source || '.' || l.table_name order by"
        " l.source || '.' || l.table_name), max({reconciled_at})"
        " from {late} l join unnest(%s::text[], %s::text[]) t(source, name)"
        " on l.source = t.source and l.table_name = t.name{where}"
        " group by l.day order by l.day").format(
        late=sql.Identifier(STATE_SCHEMA, LATE_TABLE), where=where, reconciled_at=reconciled_at),
        ([s for s, _ in tables], [t for _, t in tables], *params)).fetchall()
    return [LateDay(r[0], int(r[1]), r[2], r[3], tuple(r[4]), r[5]) for r in rows]


def late_corrections(landing_dsn: str, marts: MartTables) -> dict[str, list[LateDay]]:
    """Per mart, the days late rows touched since they last reconciled, with no correction
    pending for those rows.

    One correction per day at a time: rows landing while one is pending wait for the next
    reconciliation (it sees them in the live view: drift, explained by them); if that one was
    still not reconciled and rows landed after the pending request, it is asked again — so a
    steady trickle of late rows costs at most one mart run per day and reconciliation, not one
    per sensor tick, and a correction overtaken by newer late rows is never left pending. A day
    whose correction run failed is asked again once its backoff passed, at most
    ``TIDEMARK_CORRECTION_ATTEMPTS`` times (:func:`~tidemark.reconciliation.days.release_failed`).

    Args:
        landing_dsn: landing URL.
        marts: the event-time tables each mart reads (``finality.mart_event_tables``).
    """
    out: dict[str, list[LateDay]] = {}
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_days_table(conn)
        if conn.execute("select to_regclass('tidemark.late_events')").fetchone()[0] is None:
            return out
        due = retry_due_sql(sql.SQL("r"))
        for mart, tables in sorted(marts.items()):
            if not tables:
                continue
            rows = _late_days(conn, tables, sql.SQL(
                " where exists (select from {days} r where r.mart = %s and r.day = l.day and"
                "  coalesce(r.reconciled_at, r.checked_at) < l.last_landed_at and"
                "  (r.correction_requested_at is null or"
                "   r.correction_requested_at < least(r.checked_at, l.last_landed_at)) and {due})"
            ).format(days=sql.Identifier(STATE_SCHEMA, DAYS_TABLE),
                     due=due), (mart,))
            if rows:
                out[mart] = rows
    return out


def request_late_corrections(landing_dsn: str, mart: str, days: list[date]) -> None:
    """Note that a correction of ``days`` of ``mart`` was requested (for late data)."""
    with psycopg.connect(landing_dsn) as conn:
        conn.execute(sql.SQL(
            "update {} set correction_requested_at = clock_timestamp() where mart = %s and"
            " day = any(%s)").format(sql.Identifier(STATE_SCHEMA, DAYS_TABLE)), (mart, days))


def ensure_late_table(conn: psycopg.Connection) -> None:
    """Create ``tidemark.late_events`` if ingestion has not yet (its DDL is ingestion's)."""
    from ingestion.watermarks import LATE_EVENTS, TABLES

    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(STATE_SCHEMA)))
    conn.execute(sql.SQL("create table if not exists {} ({})").format(
        sql.Identifier(STATE_SCHEMA, LATE_TABLE), sql.SQL(TABLES[LATE_EVENTS])))


def explain_late_drift(landing_dsn: str, comparison: Comparison,
                       tables: list[tuple[str, str]]) -> dict[date, LateDay]:
    """The drifted days of ``comparison`` late rows explain; also kept in ``comparison.late``.

    A drifted day is explained when rows of a table the mart reads landed late for it after the
    day last reconciled (``reconciled_days.reconciled_at``; any time when it never did): the
    mart was built before them, the correction (:func:`late_corrections` or the drift's own)
    rebuilds it. Call it before :func:`~tidemark.reconciliation.days.record_days`.

    Args:
        landing_dsn: landing URL.
        comparison: the pair's comparison.
        tables: the event-time tables the pair's mart reads (``finality.mart_event_tables``).
    """
    days = comparison.drifted_days
    if not days or not tables:
        return {}
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_days_table(conn)
        ensure_late_table(conn)
        rows = _late_days(conn, tables, sql.SQL(
            " left join {days} r on r.pair = %s and r.day = l.day"
            " where l.day = any(%s) and (r.reconciled_at is null or"
            "  l.last_landed_at > r.reconciled_at)").format(
            days=sql.Identifier(STATE_SCHEMA, DAYS_TABLE)), (comparison.pair.name, days),
            sql.SQL("r.reconciled_at"))
    comparison.late = {d.day: d for d in rows}
    return comparison.late


def stale_final_sql(tables: list[tuple[str, str]], days: sql.Composable) -> sql.Composable:
    """SQL: late rows of ``tables`` landed for the day of ``days`` (a ``reconciled_days`` row)
    after it was last checked — served final no more until it is reconciled again."""
    if not tables:
        return sql.SQL("false")
    return sql.SQL(
        "exists (select from {late} le where le.day = {r}.day and le.last_landed_at >"
        " {r}.checked_at and (le.source, le.table_name) in ({pairs}))").format(
        late=sql.Identifier(STATE_SCHEMA, LATE_TABLE), r=days,
        pairs=sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(s), sql.Literal(t))
                                 for s, t in tables))
