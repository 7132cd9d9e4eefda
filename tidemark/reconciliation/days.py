"""The outcome per pair and day in ``tidemark.reconciled_days`` (what serving and corrections read).

:func:`record_days` keeps each comparison's per-day outcome; :func:`pending_corrections` and
:func:`mark_requested` drive the correction runs (:func:`requested_corrections`: which drifted
days had one already); :func:`contiguous_ranges` groups days.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from tidemark.reconciliation.compare import Comparison

STATE_SCHEMA = "tidemark"
DAYS_TABLE = "reconciled_days"


def ensure_days_table(conn: psycopg.Connection) -> None:
    """Create ``tidemark.reconciled_days`` if missing."""
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(STATE_SCHEMA)))
    conn.execute(sql.SQL(
        "create table if not exists {} (pair text not null, mart text not null, day date not "
        "null, status text not null check (status in ('reconciled', 'drift')), groups integer "
        "not null, drifted_groups integer not null, checked_at timestamptz not null default "
        "now(), correction_requested_at timestamptz, primary key (pair, day))").format(
        sql.Identifier(STATE_SCHEMA, DAYS_TABLE)))
    # Added with finality (issue 14): when a correction re-ran the day and it reconciled again.
    conn.execute(sql.SQL("alter table {} add column if not exists corrected_at timestamptz"
                         ).format(sql.Identifier(STATE_SCHEMA, DAYS_TABLE)))
    # When the day last reconciled (late rows landed after it explain a drift: ``late``).
    conn.execute(sql.SQL("alter table {} add column if not exists reconciled_at timestamptz"
                         ).format(sql.Identifier(STATE_SCHEMA, DAYS_TABLE)))


def record_days(landing_dsn: str, comparison: Comparison) -> None:
    """Upsert the per-day outcome of ``comparison`` into ``tidemark.reconciled_days``.

    ``checked_at`` / ``reconciled_at`` are the comparison's snapshot time (``as_of``): late rows
    landed after it are not in it, even if they landed before this call.

    A day that drifts keeps its ``correction_requested_at`` (one correction per drift; a
    correction requested for late data before this drift is the one that fixes it); a reconciled
    day clears it (unless requested after the snapshot: that request is still to run), records
    ``reconciled_at``, and when a correction had been requested (drift or late data) it becomes
    *corrected* (``corrected_at``).
    """
    table = sql.Identifier(STATE_SCHEMA, DAYS_TABLE)
    with psycopg.connect(landing_dsn) as conn:
        ensure_days_table(conn)
        for d in comparison.days:
            conn.execute(sql.SQL(
                "insert into {t} as r (pair, mart, day, status, groups, drifted_groups, "
                "checked_at, reconciled_at) values (%(pair)s, %(mart)s, %(day)s, %(status)s, "
                "%(groups)s, %(drifted)s, coalesce(%(as_of)s, now()), case when "
                "%(status)s::text = 'reconciled' then coalesce(%(as_of)s, now()) end) "
                "on conflict (pair, day) do update set status = "
                "excluded.status, mart = excluded.mart, groups = excluded.groups, "
                "drifted_groups = excluded.drifted_groups, checked_at = excluded.checked_at, "
                "corrected_at = case when excluded.status = 'reconciled' and "
                "r.correction_requested_at <= excluded.checked_at then now() "
                "else r.corrected_at end, "
                "reconciled_at = case when excluded.status = 'reconciled' then "
                "excluded.reconciled_at else r.reconciled_at end, "
                "correction_requested_at = case when excluded.status = 'drift' or "
                "r.correction_requested_at > excluded.checked_at then "
                "r.correction_requested_at end").format(t=table),
                {"pair": comparison.pair.name, "mart": comparison.pair.mart, "day": d.day,
                 "status": "reconciled" if d.reconciled else "drift", "groups": d.groups,
                 "drifted": d.drifted_groups, "as_of": comparison.as_of})


def pending_corrections(landing_dsn: str) -> dict[str, list[date]]:
    """Drifted days with no correction requested yet, per mart (oldest first)."""
    with psycopg.connect(landing_dsn) as conn:
        ensure_days_table(conn)
        rows = conn.execute(sql.SQL(
            "select mart, day from {} where status = 'drift' and correction_requested_at is "
            "null group by mart, day order by mart, day").format(
            sql.Identifier(STATE_SCHEMA, DAYS_TABLE))).fetchall()
    out: dict[str, list[date]] = {}
    for mart, day in rows:
        out.setdefault(mart, []).append(day)
    return out


def requested_corrections(landing_dsn: str, comparison: Comparison) -> dict[date, datetime]:
    """The drifted days of ``comparison`` a correction was requested for before its snapshot
    (day -> when); also kept in ``comparison.requested``. Call it before :func:`record_days`.

    Such a day drifting again after its correction ran is not late data: re-running the mart
    did not fix it.
    """
    days = comparison.drifted_days
    if not days:
        return {}
    with psycopg.connect(landing_dsn) as conn:
        ensure_days_table(conn)
        rows = conn.execute(sql.SQL(
            "select day, correction_requested_at from {} where pair = %s and day = any(%s) and "
            "correction_requested_at <= coalesce(%s, now())").format(
            sql.Identifier(STATE_SCHEMA, DAYS_TABLE)),
            (comparison.pair.name, days, comparison.as_of)).fetchall()
    comparison.requested = dict(rows)
    return comparison.requested


def mark_requested(landing_dsn: str, mart: str, days: list[date]) -> None:
    """Note that a correction of ``days`` of ``mart`` was requested."""
    with psycopg.connect(landing_dsn) as conn:
        conn.execute(sql.SQL(
            "update {} set correction_requested_at = now() where mart = %s and day = any(%s) "
            "and status = 'drift'").format(sql.Identifier(STATE_SCHEMA, DAYS_TABLE)),
            (mart, days))


def summary(landing_dsn: str) -> list[dict[str, Any]]:
    """Per pair: reconciled days, drifting days, last check, latest reconciled day."""
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        table = sql.Identifier(STATE_SCHEMA, DAYS_TABLE)
        if conn.execute("select to_regclass(%s)", (table.as_string(conn),)).fetchone()[0] is None:
            return []
        rows = conn.execute(sql.SQL(
            "select pair, mart, count(*) filter (where status = 'reconciled'),"
            " coalesce(array_agg(day order by day) filter (where status = 'drift'), '{{}}'),"
            " max(checked_at), max(day) filter (where status = 'reconciled')"
            " from {} group by pair, mart order by pair").format(table)).fetchall()
    return [{"pair": r[0], "mart": r[1], "reconciled_days": r[2], "drifting_days": list(r[3]),
             "last_checked_at": r[4], "latest_reconciled_day": r[5]} for r in rows]


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Group sorted days into (first, last) runs of consecutive days."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and day - out[-1][1] == timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out
