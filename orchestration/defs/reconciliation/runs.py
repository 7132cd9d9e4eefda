"""The correction runs in Dagster's run queue: which days of which mart they will rebuild (read by
the correction sensor, to not ask twice, and by the reconciliation check, to tell a drift a run
is about to fix from one a run did not fix); the ones that ended FAILURE or CANCELED, whose days
the sensor gives back to be asked again (:func:`release_failed_corrections`); and a
reconciliation run that failed, asked again (:func:`reconciliation_retry`); a day whose
corrections failed that a later run rebuilt after all (:func:`note_later_rebuilds`); and the
closed days no run has built yet, and the drifted ones last built before they could close, which
the reconciliation sets aside (:func:`set_aside_unbuilt`, :func:`set_aside_built_open`)."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import psycopg
from psycopg import sql

from ingestion.watermarks import policy
from orchestration.defs.dbt.jobs import daily_marts_job
from orchestration.defs.dbt.partitions import PARTITION_RANGE_END, PARTITION_RANGE_START
from orchestration.defs.keys import CORRECTION_TAG, mart_key
from tidemark.reconciliation.compare import Comparison
from tidemark.reconciliation.days import (
    DAYS_TABLE,
    STATE_SCHEMA,
    RetryPolicy,
    ensure_days_table,
    failed_days,
    note_reruns,
    release_failed,
    requested_since,
    retry_policy,
)

QUEUED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
UNFINISHED = [*QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
PARTITION_TAG = "dagster/partition"
ENDED_UNDONE = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def queued_days(instance: dg.DagsterInstance | None, statuses: list | None = None,
                exclude_run_id: str | None = None) -> dict[str, set[str]]:
    """Per mart, the days (ISO) a correction run in ``statuses`` (default: not started yet)
    will rebuild, leaving out the run ``exclude_run_id`` (one query for every mart).

    A run that has not started yet reads landing when it starts, so it absorbs every row landed
    before then: a new request for one of its days would only queue a second run behind it
    (with late rows landing every minute, the queue would grow without bound on a busy machine).
    """
    days: dict[str, set[str]] = {}
    if instance is None:
        return days
    for run in instance.get_runs(dg.RunsFilter(job_name=daily_marts_job.name,
                                               statuses=statuses or QUEUED)):
        mart = run.tags.get(CORRECTION_TAG)
        first, last = run.tags.get(PARTITION_RANGE_START), run.tags.get(PARTITION_RANGE_END)
        if mart and first and last and run.run_id != exclude_run_id:
            days.setdefault(mart, set()).update(d.isoformat() for d in range_days(first, last))
    return days


def building_days(instance: dg.DagsterInstance | None, exclude_run_id: str | None = None
                  ) -> dict[str, set[str]]:
    """Per mart, the days (ISO) a ``daily_marts`` run that is not a correction and has not
    finished (queued, starting or started) builds: a closure run of ``closed_days_sensor``, a
    backfill, a run launched from the UI; leaving out the run ``exclude_run_id``.

    Such a run was not asked by the correction sensor, and no correction request stands for its
    days: the sensor asks for none of them while it runs (a second run of the same partition
    behind it), and marks none requested, so a day it does not fix (it failed, or rows landed
    after it read landing) is asked for after it (:func:`rebuilt_since_check`).
    """
    from orchestration.defs.dbt.assets import dbt_daily_marts

    days: dict[str, set[str]] = {}
    if instance is None:
        return days
    every = {k.path[-1] for k in dbt_daily_marts.keys if k.path[0] == "marts"}
    for run in instance.get_runs(dg.RunsFilter(job_name=daily_marts_job.name,
                                               statuses=UNFINISHED)):
        if run.tags.get(CORRECTION_TAG) or run.run_id == exclude_run_id:
            continue
        first = run.tags.get(PARTITION_RANGE_START) or run.tags.get(PARTITION_TAG)
        last = run.tags.get(PARTITION_RANGE_END) or run.tags.get(PARTITION_TAG)
        if not first or not last:
            continue
        marts = every if run.asset_selection is None else {
            k.path[-1] for k in run.asset_selection if k.path[0] == "marts"}
        for mart in marts & every:
            days.setdefault(mart, set()).update(d.isoformat() for d in range_days(first, last))
    return days


def rebuilt_since_check(instance: dg.DagsterInstance, landing_dsn: str, mart: str,
                        days: list[date]) -> set[date]:
    """The ``days`` of ``mart`` a run materialised after their last reconciliation
    (``tidemark.reconciled_days.checked_at``, the oldest of the mart's pairs).

    Their drift or late rows are as old as that check: the reconciliation after the run
    (``reconcile_after_batch``) judges the day again, and a correction asked before it would
    rebuild the day a second time (a closure run that just ended). One landing query and one
    event query, only when there are ``days``.
    """
    if not days:
        return set()
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_days_table(conn)
        checked = dict(conn.execute(sql.SQL(
            "select day, min(checked_at) from {} where mart = %s and day = any(%s)"
            " group by day").format(sql.Identifier(STATE_SCHEMA, DAYS_TABLE)),
            (mart, days)).fetchall())
    if not checked:
        return set()
    records = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=mart_key(mart), asset_partitions=[d.isoformat() for d in checked],
        after_timestamp=min(checked.values()).timestamp()), limit=10_000).records
    return {date.fromisoformat(r.partition_key) for r in records
            if datetime.fromtimestamp(r.timestamp, UTC) > checked[date.fromisoformat(
                r.partition_key)]}


def set_aside_unbuilt(instance: dg.DagsterInstance | None, comparison: Comparison) -> None:
    """Set aside the compared days the mart has no row of and ``instance`` never built.

    A day closes when the watermarks pass its end (02:00 UTC for a table with 2 h of allowed
    lateness); the closure sensor then builds it. A reconciliation in between (after any run
    that built the mart: a correction, a backfill) found the day in the live view only and
    reported drift, an ERROR and a correction request, for a day nothing had built yet. A day
    the mart has no row of although a run built it stays drift (the build lost it); without an
    instance nothing is set aside.
    """
    if instance is None:
        return
    empty = {d.day for d in comparison.days if d.truth_groups == 0}
    if not empty:
        return
    built = instance.get_materialized_partitions(mart_key(comparison.pair.mart))
    comparison.set_aside({d for d in empty if d.isoformat() not in built})


def set_aside_built_open(instance: dg.DagsterInstance | None, landing_dsn: str,
                         comparison: Comparison, tables: list[tuple[str, str]]) -> None:
    """Set aside the drifted days whose last build ran before the day could close.

    A day closes once the watermarks of every event-time table the mart reads passed its end:
    not before its end plus the largest allowed lateness of those tables, less the watermark's
    future skew (02:00 UTC, 01:55 for a table of future event times, with 2 h). ``tidemark
    up`` and the nightly schedule build yesterday closed or not; rows landed after that build
    and before the day closed are not late (``tidemark.late_events`` counts none), so a
    reconciliation between the closing and ``closed_days_sensor``'s run called the day drift:
    an ERROR and a correction asked, or, once a late row had landed too, a warning that late
    rows landed "after their reconciliation" on a day never reconciled. Such a day is set
    aside until a run builds it after it closed. A day that reconciled since it closed is
    still compared: its drift is real.

    Args:
        instance: the Dagster instance (None: nothing is set aside).
        landing_dsn: landing, for the tables' allowed lateness (``tidemark.watermarks``).
        comparison: the pair's comparison, before :func:`explain_late_drift`.
        tables: ``(source, table)`` of the event-time tables the mart reads.
    """
    days = comparison.drifted_days
    if instance is None or not days or not tables:
        return
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        lateness = conn.execute(sql.SQL(
            "select max(allowed_lateness) from {} where (source, table_name) in"
            " (select * from unnest(%s::text[], %s::text[]))").format(
                sql.Identifier(STATE_SCHEMA, "watermarks")),
            ([s for s, _ in tables], [t for _, t in tables])).fetchone()[0]
        ensure_days_table(conn)
        reconciled = dict(conn.execute(sql.SQL(
            "select day, reconciled_at from {} where pair = %s and day = any(%s)"
            " and reconciled_at is not null").format(
                sql.Identifier(STATE_SCHEMA, DAYS_TABLE)),
            (comparison.pair.name, days)).fetchall())
    if lateness is None:
        return
    key = mart_key(comparison.pair.mart)
    open_days = set()
    for day in days:
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        earliest_close = end + lateness - policy().future_skew
        last = instance.fetch_materializations(  # the newest first
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]),
            limit=1).records
        if not last or datetime.fromtimestamp(last[0].timestamp, UTC) >= earliest_close:
            continue
        if day in reconciled and reconciled[day] >= earliest_close:
            continue
        open_days.add(day)
    comparison.set_aside(open_days, built_open=True)


def range_days(first: str, last: str) -> list[date]:
    """The days ``first``..``last`` (ISO, inclusive)."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def ended_at(record: dg.RunRecord) -> datetime:
    """When a run ended (its last update when the end time was not recorded)."""
    if record.end_time is not None:
        return datetime.fromtimestamp(record.end_time, UTC)
    return record.update_timestamp.astimezone(UTC)


def release_failed_corrections(instance: dg.DagsterInstance, landing_dsn: str) -> list[str]:
    """Give back the days of every correction run that ended FAILURE or CANCELED since its
    days were requested (``tidemark.reconciled_days``), so the sensor asks again after the
    backoff (:func:`tidemark.reconciliation.days.release_failed`).

    Only the marts with a request standing are looked up, and only their runs created since
    the earliest one: a tick with nothing requested reads no run.

    Returns:
        One line per run released, e.g. ``"fct_daily_store_revenue 2026-12-04 (run 1a2b3c4d
        FAILURE, attempt 1 of 3)"``.
    """
    released = []
    for mart, since in sorted(requested_since(landing_dsn).items()):
        records = instance.get_run_records(dg.RunsFilter(
            job_name=daily_marts_job.name, statuses=ENDED_UNDONE, tags={CORRECTION_TAG: mart},
            created_after=since - timedelta(seconds=1)), ascending=True)
        for record in records:
            run = record.dagster_run
            first, last = run.tags.get(PARTITION_RANGE_START), run.tags.get(PARTITION_RANGE_END)
            if not first or not last:
                continue
            days = release_failed(landing_dsn, mart, range_days(first, last), run.run_id,
                                  record.create_timestamp, ended_at(record))
            if days:
                released.append(f"{mart} {', '.join(d.isoformat() for d in days)} (run "
                                f"{run.run_id[:8]} {run.status.value})")
    return released


def note_later_rebuilds(instance: dg.DagsterInstance, landing_dsn: str, mart: str) -> list[date]:
    """Clear the failed corrections of the days of ``mart`` a run materialised after the last
    failure (the user re-ran them, e.g. from the Dagster UI, once the cause was fixed): the day
    is corrected at that time (:func:`tidemark.reconciliation.days.note_reruns`).

    One event query, only when the mart has such days.

    Returns:
        The days cleared.
    """
    days = failed_days(landing_dsn, mart)
    if not days:
        return []
    ended = {}  # when each failed run ended, as Dagster recorded it (else as landing did)
    for run_id, at in set(days.values()):
        record = instance.get_run_record_by_id(run_id)
        ended[run_id] = ended_at(record) if record is not None else at
    failed = {day: ended[run_id] for day, (run_id, _) in days.items()}
    records = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=mart_key(mart), asset_partitions=[d.isoformat() for d in failed],
        after_timestamp=min(failed.values()).timestamp()), limit=10_000).records
    latest: dict[date, datetime] = {}
    for record in records:
        day = date.fromisoformat(record.partition_key)
        at = datetime.fromtimestamp(record.timestamp, UTC)
        if at > failed[day] and (day not in latest or at > latest[day]):
            latest[day] = at
    return note_reruns(landing_dsn, mart, latest)


def reconciliation_retry(instance: dg.DagsterInstance, job_name: str,
                         now: datetime | None = None, policy: RetryPolicy | None = None,
                         asked_at: datetime | None = None) -> dg.RunRequest | str | None:
    """A run request for ``job_name`` (the reconciliation job) when its last run ended FAILURE
    or CANCELED — the marts ``reconcile_after_batch`` asked it for are then not reconciled —
    once the backoff since it passed; a message instead after ``policy.attempts`` such runs in
    a row (None: nothing to do, or not yet).

    The run key names the failed run, so each failure is asked for once. ``now``: the time to
    measure the backoff at (default: now); ``policy``: default the settings'; ``asked_at``:
    when `tidemark reconcile retry --job` asked for the job again
    (``days.job_asked_again_at``): the runs that ended before it do not count, and a last run
    that failed before it is asked for at once.
    """
    policy = policy or retry_policy()
    records = instance.get_run_records(dg.RunsFilter(job_name=job_name),
                                       limit=policy.attempts)
    failed = 0
    for record in records:
        if record.dagster_run.status not in ENDED_UNDONE or (
                asked_at is not None and ended_at(record) <= asked_at):
            break
        failed += 1
    if not failed:
        last = records[0] if records else None
        if last is None or last.dagster_run.status not in ENDED_UNDONE or asked_at is None:
            return None
        return dg.RunRequest(job_name=job_name,
                             run_key=f"retry-{last.dagster_run.run_id}-{asked_at.timestamp()}",
                             tags={"tidemark/retry_of": last.dagster_run.run_id})
    last = records[0]
    if failed >= policy.attempts:
        return (f"the last {failed} {job_name} runs ended FAILURE/CANCELED (last run "
                f"{last.dagster_run.run_id}, ended {ended_at(last):%Y-%m-%d %H:%M} UTC), so "
                f"it is not asked again: read that run's log, fix the cause and launch the "
                f"{job_name} job (or run `tidemark reconcile retry --job`: the sensor launches "
                f"it within a minute).")
    if ended_at(last) + policy.wait(failed) > (now or datetime.now(UTC)):
        return None
    return dg.RunRequest(job_name=job_name, run_key=f"retry-{last.dagster_run.run_id}",
                         tags={"tidemark/retry_of": last.dagster_run.run_id})
