"""Late data after finality: which mart days late events touched, and the corrections they need.

Ingestion records, per table and UTC day, the inserts that landed after the table's watermark had
passed the day's end (``tidemark.late_events``, :mod:`ingestion.watermarks`). A mart day that was
reconciled (served final) before such rows landed is stale: :func:`late_corrections` finds those
days — per mart, through the tables the mart reads (:mod:`tidemark.reconciliation.finality`) —
and :func:`request_late_corrections` marks them requested, so the correction sensor re-runs each
day once; when it reconciles again it is served ``corrected`` (:mod:`.serving`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg
from psycopg import sql

from tidemark.reconciliation.days import DAYS_TABLE, STATE_SCHEMA, ensure_days_table
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
    """

    day: date
    late_rows: int
    worst_lateness: timedelta
    last_landed_at: datetime
    tables: tuple[str, ...]


def late_corrections(landing_dsn: str, marts: MartTables) -> dict[str, list[LateDay]]:
    """Per mart, the reconciled days late rows touched since, with no correction pending.

    One correction per day at a time: rows landing while one is pending wait for the
    reconciliation after it (it sees them in the live view: drift, or ``checked_at`` before them
    asks again), so a steady trickle of late rows costs one mart run per day and round, not one
    per sensor tick.

    Args:
        landing_dsn: landing URL.
        marts: the event-time tables each mart reads (``finality.mart_event_tables``).
    """
    out: dict[str, list[LateDay]] = {}
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_days_table(conn)
        if conn.execute("select to_regclass('tidemark.late_events')").fetchone()[0] is None:
            return out
        for mart, tables in sorted(marts.items()):
            if not tables:
                continue
            rows = conn.execute(sql.SQL(
                "select l.day, sum(l.late_rows), max(l.worst_lateness), max(l.last_landed_at),"
                " array_agg(distinct l.source || '.' || l.table_name order by"
                " l.source || '.' || l.table_name)"
                " from {late} l join unnest(%s::text[], %s::text[]) t(source, name)"
                " on l.source = t.source and l.table_name = t.name"
                " where exists (select from {days} r where r.mart = %s and r.day = l.day and"
                "  r.checked_at < l.last_landed_at and r.correction_requested_at is null)"
                " group by l.day order by l.day").format(
                late=sql.Identifier(STATE_SCHEMA, LATE_TABLE),
                days=sql.Identifier(STATE_SCHEMA, DAYS_TABLE)),
                ([s for s, _ in tables], [t for _, t in tables], mart)).fetchall()
            if rows:
                out[mart] = [LateDay(r[0], int(r[1]), r[2], r[3], tuple(r[4])) for r in rows]
    return out


def request_late_corrections(landing_dsn: str, mart: str, days: list[date]) -> None:
    """Note that a correction of ``days`` of ``mart`` was requested (for late data)."""
    with psycopg.connect(landing_dsn) as conn:
        conn.execute(sql.SQL(
            "update {} set correction_requested_at = clock_timestamp() where mart = %s and"
            " day = any(%s)").format(sql.Identifier(STATE_SCHEMA, DAYS_TABLE)), (mart, days))
