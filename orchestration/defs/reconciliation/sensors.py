"""Reconciliation sensors: ``reconciliation_corrections`` re-runs the mart for just the drifted
days and the reconciled days late data touched (one run per run of consecutive days, a single
dbt invocation each; late rows absorbed are recorded on each mart partition; never a day another
run of the mart — a closure run — builds, or built since the day's last check) and asks again when
such a run — or a reconciliation run — ended FAILURE or CANCELED (bounded, with a backoff);
``reconcile_after_batch`` runs the reconciliation job after every successful run that built a
daily mart without its reconciliation checks (a run of the marts with their checks, as the
``daily_marts`` job and the UI's Materialize do, reconciles in the same run)."""


from datetime import UTC, date, datetime

import dagster as dg
import psycopg

from orchestration.defs.dbt.assets import dbt_daily_marts
from orchestration.defs.dbt.jobs import daily_marts_job
from orchestration.defs.dbt.partitions import (
    PARTITION_RANGE_END,
    PARTITION_RANGE_START,
    partitions_start,
    range_tags,
)
from orchestration.defs.keys import CORRECTION_TAG, mart_key
from orchestration.defs.reconciliation.checks import reconciliation
from orchestration.defs.reconciliation.jobs import reconciliation_job
from orchestration.defs.reconciliation.runs import (
    QUEUED,
    building_days,
    queued_days,
    range_days,
    rebuilt_since_check,
    reconciliation_retry,
    release_failed_corrections,
)
from orchestration.defs.resources import TidemarkResource, unreachable
from tidemark.reconciliation.days import (
    contiguous_ranges,
    given_up,
    job_asked_again_at,
    mark_requested,
    pending_corrections,
)
from tidemark.reconciliation.late import late_corrections, request_late_corrections


def _left_to_others(instance: dg.DagsterInstance | None, landing: str, mart: str,
                    days: list[date], building: dict[str, set[str]] | None) -> set[date]:
    """The ``days`` of ``mart`` another run builds or built since their last check: a run of the
    mart not asked by this sensor, not finished (:func:`building_days`), or one that ended
    since the reconciliation (:func:`rebuilt_since_check`); nothing is asked or marked for
    them."""
    mine = (building or {}).get(mart, set())
    left = {d for d in days if d.isoformat() in mine}
    if instance is not None:
        left |= rebuilt_since_check(instance, landing, mart, [d for d in days if d not in left])
    return left


def correction_requests(tidemark: TidemarkResource, earliest: str | None = None,
                        queued: dict[str, set[str]] | None = None,
                        instance: dg.DagsterInstance | None = None,
                        building: dict[str, set[str]] | None = None) -> list[dg.RunRequest]:
    """Run requests re-running the drifted marts for just the drifted days.

    Each run of consecutive days of a mart is one run (a single dbt invocation over the range);
    the days are marked as requested so they are not requested twice. A day a queued correction
    of the same mart covers is left to that run (:func:`queued_days`); a day another run of the
    mart (a closure run) builds or built since its check is neither asked nor marked
    (:func:`_left_to_others`).
    """
    landing = tidemark.urls().landing_app
    requests = []
    for mart, days in pending_corrections(landing).items():
        waiting = (queued or {}).get(mart, set())
        others = _left_to_others(instance, landing, mart, days, building)
        days = [d for d in days if d not in others]
        kept = [d for d in days if (earliest is None or d.isoformat() >= earliest)
                and d.isoformat() not in waiting]
        for first, last in contiguous_ranges(kept):
            requests.append(dg.RunRequest(
                run_key=f"correct-{mart}-{first}-{last}-{datetime.now(UTC):%Y%m%dT%H%M%S}",
                job_name=daily_marts_job.name, asset_selection=[mart_key(mart)],
                tags={**range_tags(first.isoformat(), last.isoformat()),
                      CORRECTION_TAG: mart}))
        if days:
            mark_requested(landing, mart, days)
    return requests


def late_requests(tidemark: TidemarkResource, earliest: str | None = None,
                  queued: dict[str, set[str]] | None = None,
                  instance: dg.DagsterInstance | None = None,
                  building: dict[str, set[str]] | None = None
                  ) -> tuple[list[dg.RunRequest], list[dg.AssetObservation]]:
    """Run requests re-running the marts for the reconciled days late rows touched since, and an
    observation per mart partition: late rows absorbed, worst lateness, when they landed. A day
    a queued correction of the same mart covers is left to that run (:func:`queued_days`); a
    day another run of the mart builds or built since its check is left alone
    (:func:`_left_to_others`)."""
    from orchestration.defs.dbt.project import manifest_path
    from tidemark.reconciliation.finality import mart_event_tables

    landing = tidemark.urls().landing_app
    requests, observations = [], []
    for mart, late in late_corrections(landing, mart_event_tables(manifest_path())).items():
        others = _left_to_others(instance, landing, mart, [d.day for d in late], building)
        late = [d for d in late if d.day not in others]
        kept = [d for d in late if earliest is None or d.day.isoformat() >= earliest]
        for item in kept:
            observations.append(dg.AssetObservation(
                mart_key(mart), partition=item.day.isoformat(), metadata={
                    "late_rows_absorbed": item.late_rows,
                    "worst_lateness_s": round(item.worst_lateness.total_seconds(), 1),
                    "late_rows_landed_at": item.last_landed_at.isoformat(),
                    "late_tables": ", ".join(item.tables)}))
        waiting = (queued or {}).get(mart, set())
        for first, last in contiguous_ranges([d.day for d in kept
                                              if d.day.isoformat() not in waiting]):
            requests.append(dg.RunRequest(
                run_key=f"late-{mart}-{first}-{last}-{datetime.now(UTC):%Y%m%dT%H%M%S}",
                job_name=daily_marts_job.name, asset_selection=[mart_key(mart)],
                tags={**range_tags(first.isoformat(), last.isoformat()),
                      CORRECTION_TAG: mart, "tidemark/reason": "late data"}))
        if late:
            request_late_corrections(landing, mart, [d.day for d in late])
    return requests, observations


def with_requested(queued: dict[str, set[str]], requests: list[dg.RunRequest]
                   ) -> dict[str, set[str]]:
    """``queued`` (mart -> ISO days a correction run will rebuild) plus the days of the
    correction ``requests`` of this tick."""
    out = {mart: set(days) for mart, days in queued.items()}
    for request in requests:
        mart = request.tags.get(CORRECTION_TAG)
        first = request.tags.get(PARTITION_RANGE_START)
        last = request.tags.get(PARTITION_RANGE_END)
        if mart and first and last:
            out.setdefault(mart, set()).update(d.isoformat() for d in range_days(first, last))
    return out


@dg.sensor(name="reconciliation_corrections", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           jobs=[daily_marts_job, reconciliation_job],
           description="Re-runs the marts for just the days reconciliation found drifting "
                       "and the final days late data touched; asks again, with a backoff and "
                       "at most TIDEMARK_CORRECTION_ATTEMPTS times (3), when such a run (or a "
                       "reconciliation) failed; `tidemark reconcile retry` asks again.")
def reconciliation_corrections(context: dg.SensorEvaluationContext,
                               tidemark: TidemarkResource):
    """Launch a correction run per range of drifted days; first give back the days of the
    correction runs that ended FAILURE or CANCELED (:func:`release_failed_corrections`)."""
    landing = tidemark.urls().landing_app
    try:
        released = release_failed_corrections(context.instance, landing)
        queued = queued_days(context.instance)
        building = building_days(context.instance)
        requests = correction_requests(tidemark, partitions_start(), queued, context.instance,
                                       building)
        # a day just asked for its drift is not asked again for its late rows (another pair
        # of the same mart can still hold it "late" in the same tick)
        late, observations = late_requests(tidemark, partitions_start(),
                                           with_requested(queued, requests), context.instance,
                                           building)
        stuck = [g.message() for g in given_up(landing)]
        asked_at = job_asked_again_at(landing, reconciliation_job.name)
    except psycopg.OperationalError as exc:
        return dg.SkipReason(unreachable(exc))
    retry = reconciliation_retry(context.instance, reconciliation_job.name, asked_at=asked_at)
    if isinstance(retry, dg.RunRequest):
        requests.append(retry)
    elif retry:
        stuck.append(retry)
    notes = []
    if released:
        notes.append(f"Correction runs that failed gave their days back, asked again after "
                     f"the backoff: {'; '.join(released)}.")
    if stuck:
        notes.append(f"Stopped asking: {' '.join(stuck)}")
    for note in notes:
        context.log.warning(note)
    if not requests and not late and not observations:
        return dg.SkipReason(" ".join(["No drifted days and no late data waiting for a "
                                       "correction.", *notes]))
    return dg.SensorResult(run_requests=requests + late, asset_events=observations)


def needs_reconciliation(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a run built a daily mart without evaluating that mart's reconciliation checks (a
    run that selected the marts' checks reconciled already)."""
    events = instance.get_records_for_run(run_id, of_type={
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION}).records
    built, checked = set(), set()
    for record in events:
        event = record.event_log_entry.dagster_event
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            built.add(event.asset_key)
        else:
            data = event.event_specific_data
            checked.add(dg.AssetCheckKey(data.asset_key, data.check_name))
    needed = {key for key in reconciliation.check_keys if key.asset_key in built}
    return bool(built & set(dbt_daily_marts.keys)) and not needed <= checked


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="reconcile_after_batch",
                      request_job=reconciliation_job,
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Reconciles live against truth after every successful run "
                                  "that built a daily mart (schedules, backfills, the UI).")
def reconcile_after_batch(context: dg.RunStatusSensorContext):
    """Request the reconciliation job once per successful run that built a daily mart."""
    run = context.dagster_run
    if run.job_name == reconciliation_job.name or not needs_reconciliation(context.instance,
                                                                            run.run_id):
        return dg.SkipReason(f"run {run.run_id[:8]} built no daily mart or reconciled already")
    if context.instance.get_runs_count(dg.RunsFilter(job_name=reconciliation_job.name,
                                                     statuses=QUEUED)):
        return dg.SkipReason(f"run {run.run_id[:8]}: a reconciliation run is queued already and"
                             " reconciles its marts when it starts")
    return dg.RunRequest(run_key=f"after-{run.run_id}")
