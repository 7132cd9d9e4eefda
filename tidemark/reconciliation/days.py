"""The outcome per pair and day in ``tidemark.reconciled_days`` (what serving and corrections read).

:func:`record_days` keeps each comparison's per-day outcome; :func:`pending_corrections` and
:func:`mark_requested` drive the correction runs (:func:`requested_corrections`: which drifted
days had one already); :func:`contiguous_ranges` groups days.

A correction run that ends FAILURE or CANCELED gives its days back (:func:`release_failed`):
the request is cleared, so the sensor asks again — after a backoff (:func:`retry_due_sql`:
``TIDEMARK_CORRECTION_BACKOFF_S`` doubled per failure) and at most
``TIDEMARK_CORRECTION_ATTEMPTS`` times per day (:class:`RetryPolicy`), then it stops asking
(:func:`given_up` says which days, which run, what to do). A day that reconciles again starts
from zero, and so does a day ``tidemark reconcile retry`` names (:func:`retry_corrections`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from tidemark.reconciliation.compare import Comparison

STATE_SCHEMA = "tidemark"
DAYS_TABLE = "reconciled_days"
RECONCILIATION_JOB = "reconciliation"
"""The Dagster job of every reconciliation check (``orchestration.defs.reconciliation.jobs``)."""
JOB_RETRIES_TABLE = "reconciliation_job_retries"
"""When `tidemark reconcile retry --job` last asked for a job again (the reconciliation job's
failed runs before it no longer count against its retries)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how soon, a failed correction run is asked again.

    A run that fails at once (the code server unreachable, a dbt error) never loops taking the
    correction run slot: the sensor waits ``backoff_s`` after the first failure, doubled after
    each further one (2, 4 minutes by default), and stops after ``attempts`` failures.

    Attributes:
        attempts: failed correction runs of one day of a mart before the sensor stops asking
            (``TIDEMARK_CORRECTION_ATTEMPTS``, default 3).
        backoff_s: the wait after the first failure (``TIDEMARK_CORRECTION_BACKOFF_S``, 120).
    """

    attempts: int = 3
    backoff_s: float = 120.0

    def wait(self, failures: int) -> timedelta:
        """The wait after the ``failures``-th failure in a row (``failures`` >= 1)."""
        return timedelta(seconds=self.backoff_s * 2 ** max(failures - 1, 0))


def retry_policy() -> RetryPolicy:
    """The policy of the settings (``TIDEMARK_CORRECTION_ATTEMPTS`` / ``_BACKOFF_S``).

    Raises:
        SettingsError: one of them is not usable (named, with what it must be).
    """
    from tidemark.settings import load_settings

    settings = load_settings()
    return RetryPolicy(settings.correction_attempts, settings.correction_backoff_s)


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
    # Round 36: correction runs of the day that ended FAILURE / CANCELED since it last
    # reconciled, the last one and when it ended (:func:`release_failed`).
    conn.execute(sql.SQL(
        "alter table {} add column if not exists correction_attempts integer not null default 0,"
        " add column if not exists correction_failed_run text,"
        " add column if not exists correction_failed_at timestamptz").format(
        sql.Identifier(STATE_SCHEMA, DAYS_TABLE)))


def record_days(landing_dsn: str, comparison: Comparison) -> None:
    """Upsert the per-day outcome of ``comparison`` into ``tidemark.reconciled_days``.

    ``checked_at`` / ``reconciled_at`` are the comparison's snapshot time (``as_of``): late rows
    landed after it are not in it, even if they landed before this call.

    A day that drifts keeps its ``correction_requested_at`` (one correction per drift; a
    correction requested for late data before this drift is the one that fixes it); a reconciled
    day clears it (unless requested after the snapshot: that request is still to run), records
    ``reconciled_at``, and when a correction had been requested (drift or late data) it becomes
    *corrected* (``corrected_at``); its count of failed correction runs starts from zero.
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
                "r.correction_requested_at end, "
                "correction_attempts = case when excluded.status = 'reconciled' then 0 else "
                "r.correction_attempts end, "
                "correction_failed_run = case when excluded.status = 'reconciled' then null "
                "else r.correction_failed_run end, "
                "correction_failed_at = case when excluded.status = 'reconciled' then null "
                "else r.correction_failed_at end").format(t=table),
                {"pair": comparison.pair.name, "mart": comparison.pair.mart, "day": d.day,
                 "status": "reconciled" if d.reconciled else "drift", "groups": d.groups,
                 "drifted": d.drifted_groups, "as_of": comparison.as_of})


def pending_corrections(landing_dsn: str, policy: RetryPolicy | None = None
                        ) -> dict[str, list[date]]:
    """Drifted days with no correction requested yet, per mart (oldest first); a day whose
    correction runs failed waits for its backoff and is given up after ``policy.attempts``
    (:func:`retry_due_sql`; default policy: the settings')."""
    with psycopg.connect(landing_dsn) as conn:
        ensure_days_table(conn)
        rows = conn.execute(sql.SQL(
            "select mart, day from {} r where status = 'drift' and correction_requested_at is "
            "null and {} group by mart, day order by mart, day").format(
            sql.Identifier(STATE_SCHEMA, DAYS_TABLE),
            retry_due_sql(sql.SQL("r"), policy))).fetchall()
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


def retry_due_sql(days: sql.Composable, policy: RetryPolicy | None = None) -> sql.Composable:
    """SQL: the ``reconciled_days`` row ``days`` may be asked for (again): fewer than
    ``policy.attempts`` failed correction runs, the last one ``policy.backoff_s`` × 2^(n-1) ago
    or more (default policy: the settings')."""
    policy = policy or retry_policy()
    return sql.SQL(
        "({r}.correction_attempts < {most} and ({r}.correction_failed_at is null or"
        " {r}.correction_failed_at + make_interval(secs => {backoff} * power(2,"
        " greatest({r}.correction_attempts - 1, 0))) <= clock_timestamp()))").format(
        r=days, most=sql.Literal(policy.attempts),
        backoff=sql.Literal(float(policy.backoff_s)))


def _rows(landing_dsn: str, query: sql.SQL, params: tuple | dict[str, Any]) -> list[tuple]:
    """Run ``query`` (``{}`` or ``{0}``: the days table, created if missing) and return its
    rows."""
    with psycopg.connect(landing_dsn) as conn:
        ensure_days_table(conn)
        return conn.execute(query.format(sql.Identifier(STATE_SCHEMA, DAYS_TABLE)),
                            params).fetchall()


def ask_job_again(landing_dsn: str, job: str) -> datetime:
    """Record that ``job`` (the reconciliation job, given up after its failed runs) is to be
    asked again: its runs that failed before now no longer count, and the sensor launches it at
    its next tick if its last run failed (``orchestration.defs.reconciliation.runs``).

    Returns:
        When it was asked (the landing's clock).
    """
    with psycopg.connect(landing_dsn) as conn:
        _ensure_job_retries(conn)
        return conn.execute(sql.SQL(
            "insert into {} as r (job, asked_at) values (%s, clock_timestamp()) on conflict"
            " (job) do update set asked_at = excluded.asked_at returning asked_at").format(
            sql.Identifier(STATE_SCHEMA, JOB_RETRIES_TABLE)), (job,)).fetchone()[0]


def job_asked_again_at(landing_dsn: str, job: str) -> datetime | None:
    """When :func:`ask_job_again` last asked for ``job`` again (None: never)."""
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        if conn.execute("select to_regclass(%s)", (f"{STATE_SCHEMA}.{JOB_RETRIES_TABLE}",)
                        ).fetchone()[0] is None:
            return None
        row = conn.execute(sql.SQL("select asked_at from {} where job = %s").format(
            sql.Identifier(STATE_SCHEMA, JOB_RETRIES_TABLE)), (job,)).fetchone()
    return row[0] if row else None


def _ensure_job_retries(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(STATE_SCHEMA)))
    conn.execute(sql.SQL("create table if not exists {} (job text primary key, asked_at"
                         " timestamptz not null)").format(
        sql.Identifier(STATE_SCHEMA, JOB_RETRIES_TABLE)))


def requested_since(landing_dsn: str) -> dict[str, datetime]:
    """Per mart, the earliest correction request still standing (the runs that can have failed
    since; none when no day waits for a correction)."""
    return dict(_rows(landing_dsn, sql.SQL(
        "select mart, min(correction_requested_at) from {} where correction_requested_at is"
        " not null group by mart"), ()))


def release_failed(landing_dsn: str, mart: str, days: list[date], run_id: str,
                   created_at: datetime, ended_at: datetime) -> list[date]:
    """Give back the days of ``mart`` a correction run (``run_id``, created at ``created_at``)
    that ended FAILURE or CANCELED at ``ended_at`` was asked for: their request is cleared and
    the failure counted, so the sensor asks again after the backoff. Days requested again after
    that run was created (a later request) are left alone, so one run is counted once.

    Returns:
        The days released.
    """
    rows = _rows(landing_dsn, sql.SQL(
        "update {} set correction_requested_at = null,"
        " correction_attempts = correction_attempts + 1, correction_failed_run = %s,"
        " correction_failed_at = %s where mart = %s and day = any(%s) and"
        " correction_requested_at <= %s returning day"),
        (run_id, ended_at, mart, days, created_at))
    return sorted({r[0] for r in rows})


def failed_days(landing_dsn: str, mart: str) -> dict[date, tuple[str, datetime]]:
    """The days of ``mart`` whose correction runs failed and that wait (for their backoff, or
    given up) with no correction requested: day -> (the last failed run, when it ended)."""
    rows = _rows(landing_dsn, sql.SQL(
        "select day, correction_failed_run, correction_failed_at from {} where mart = %s and"
        " correction_attempts > 0 and correction_requested_at is null"
        " and correction_failed_at is not null order by day, correction_failed_at"), (mart,))
    return {day: (run, at) for day, run, at in rows}


def note_reruns(landing_dsn: str, mart: str, reruns: dict[date, datetime]) -> list[date]:
    """Record that ``mart`` was rebuilt for days whose correction runs had failed (day -> when
    a later run materialised it, e.g. from the Dagster UI): the failures are cleared and the
    day counts as corrected at that time — reconciling, it is final again; still drifting, the
    check says a re-run did not fix it and the sensor does not ask again.

    Returns:
        The days whose failures were cleared.
    """
    if not reruns:
        return []
    days, times = list(reruns), [reruns[d] for d in reruns]
    rows = _rows(landing_dsn, sql.SQL(
        "update {} r set correction_attempts = 0, correction_failed_run = null,"
        " correction_failed_at = null, correction_requested_at = x.at"
        " from unnest(%s::date[], %s::timestamptz[]) as x(day, at)"
        " where r.mart = %s and r.day = x.day and r.correction_attempts > 0"
        " and r.correction_requested_at is null returning r.day"), (days, times, mart))
    return sorted({r[0] for r in rows})


@dataclass(frozen=True)
class GivenUp:
    """Days of a mart the sensor stopped asking a correction for.

    Attributes:
        mart: the mart.
        days: the days, oldest first.
        attempts: failed correction runs of those days (the most of any of them).
        last_run: the run id of the last failed one.
        failed_at: when it ended.
    """

    mart: str
    days: tuple[date, ...]
    attempts: int
    last_run: str
    failed_at: datetime

    def message(self) -> str:
        """What happened and what to do, e.g. for a sensor's skip reason or a check."""
        return (f"marts.{self.mart} for {', '.join(d.isoformat() for d in self.days)}: "
                f"{self.attempts} correction runs failed (last run {self.last_run}, ended "
                f"{self.failed_at:%Y-%m-%d %H:%M} UTC), so the correction sensor stopped asking. "
                f"Read that run's log in Dagster and fix the cause, then run `tidemark "
                f"reconcile retry --mart {self.mart} {' '.join(d.isoformat() for d in self.days)}`"
                f" (the sensor asks again within a minute), or re-run those days yourself "
                f"(the daily_marts job or a backfill of those partitions); once a day "
                f"reconciles again the sensor corrects it on its own again.")


def given_up(landing_dsn: str, policy: RetryPolicy | None = None) -> list[GivenUp]:
    """The days, per mart, whose correction runs failed ``policy.attempts`` times since they
    last reconciled (or were retried): the sensor asks no more for them."""
    rows = _rows(landing_dsn, sql.SQL(
        "select mart, array_agg(distinct day order by day), max(correction_attempts),"
        " (array_agg(correction_failed_run order by correction_failed_at desc))[1],"
        " max(correction_failed_at) from {} where correction_attempts >= %s"
        " group by mart order by mart"), ((policy or retry_policy()).attempts,))
    return [GivenUp(r[0], tuple(r[1]), r[2], r[3], r[4].astimezone(UTC)) for r in rows]


@dataclass(frozen=True)
class Retried:
    """A day of a mart whose count of failed correction runs was cleared.

    Attributes:
        mart: the mart.
        day: the day.
        attempts: failed correction runs counted before.
        last_run: the run id of the last failed one.
    """

    mart: str
    day: date
    attempts: int
    last_run: str | None


def retry_corrections(landing_dsn: str, days: list[date] | None = None,
                      mart: str | None = None) -> list[Retried]:
    """Clear the count of failed correction runs of ``days`` (None: every day) of ``mart``
    (None: every mart), so the correction sensor asks for them at its next tick, without a
    backoff — given up days and days waiting for their backoff alike. Days a correction is
    requested for (a run queued or running) are left alone.

    Returns:
        The days cleared, per mart and day.
    """
    rows = _rows(landing_dsn, sql.SQL(
        "with old as (select pair, day, correction_attempts, correction_failed_run from {0}"
        " where correction_attempts > 0 and correction_requested_at is null"
        " and (%(days)s::date[] is null or day = any(%(days)s::date[]))"
        " and (%(mart)s::text is null or mart = %(mart)s::text) for update)"
        " update {0} r set correction_attempts = 0, correction_failed_run = null,"
        " correction_failed_at = null from old where r.pair = old.pair and r.day = old.day"
        " returning r.mart, r.day, old.correction_attempts, old.correction_failed_run"),
        {"days": days, "mart": mart})
    merged: dict[tuple[str, date], Retried] = {}
    for m, day, attempts, run in rows:  # pairs of one mart share its days
        seen = merged.get((m, day))
        if seen is None or attempts > seen.attempts:
            merged[(m, day)] = Retried(m, day, attempts, run)
    return [merged[k] for k in sorted(merged)]


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
