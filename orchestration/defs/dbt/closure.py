"""``closed_days_sensor`` (running by default): builds a mart's days as the watermarks close them.

The nightly schedule builds yesterday at a fixed hour, closed or not (reconciliation then compares
only closed days and serving keeps the rest provisional); this sensor builds each mart's days
once they are closed (``tidemark.reconciliation.finality``): when a mart's last closed day moves
on, one ``daily_marts`` run covers the newly closed days of that mart. The first evaluation only
records where each mart stands (history is the nightly batch's and backfills' job). A closure run
that ended FAILURE or CANCELED (a stop of ``tidemark up`` cancels the runs in flight) is asked
again once (:func:`closure_retries`).
"""

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import psycopg

from orchestration.defs.dbt.jobs import daily_marts_job
from orchestration.defs.dbt.partitions import (
    PARTITION_RANGE_END,
    PARTITION_RANGE_START,
    partitions_start,
    range_tags,
)
from orchestration.defs.keys import mart_key
from orchestration.defs.resources import TidemarkResource, unreachable
from tidemark.reconciliation.finality import Finality

REASON_TAG = "tidemark/reason"
CLOSURE_REASON = "days closed"
"""The ``tidemark/reason`` tag of a closure run."""
RETRY_OF = "tidemark/retry_of"
"""The tag of a closure run asked again: the run id of the one that did not succeed."""
LOOK_BACK = 50
"""How many of the latest closure runs that ended FAILURE or CANCELED are looked at."""


def closure_requests(final: dict[str, Finality], cursor: str | None, earliest: str | None = None
                     ) -> tuple[list[dg.RunRequest], str]:
    """Run requests for the days closed since ``cursor`` (JSON: mart -> last closed day built).

    Args:
        final: per mart, where its days stand.
        cursor: the previous cursor, or None on the first evaluation (nothing requested).
        earliest: the first partition day (ISO); earlier days are never requested.

    Returns:
        (run requests, new cursor).
    """
    before: dict[str, str] = json.loads(cursor) if cursor else {}
    after = dict(before)
    requests = []
    for mart, f in sorted(final.items()):
        if f.closed_through is None:
            continue
        last = f.closed_through.isoformat()
        after[mart] = max(last, before.get(mart, last))
        if cursor is None or mart not in before or last <= before[mart]:
            continue
        first = (date.fromisoformat(before[mart]) + timedelta(days=1)).isoformat()
        if earliest is not None:
            first = max(first, earliest)
        if first > last:
            continue
        requests.append(dg.RunRequest(
            run_key=f"closed-{mart}-{first}-{last}", job_name=daily_marts_job.name,
            asset_selection=[mart_key(mart)],
            tags={**range_tags(first, last), REASON_TAG: CLOSURE_REASON}))
    return requests, json.dumps(after, sort_keys=True)


def closure_retries(instance: dg.DagsterInstance, earliest: str | None = None,
                    now: datetime | None = None) -> tuple[list[dg.RunRequest], list[str]]:
    """Ask again, once, for the closure runs that ended FAILURE or CANCELED.

    A stop of ``tidemark up`` cancels the runs in flight; the cursor had moved past their days,
    so nothing asked for them again and the day stayed unbuilt (or built before it closed, not
    reconciled) until the next ``tidemark up``'s correction window. Each such run is asked
    again with the same mart and days, tagged ``tidemark/retry_of``, once the correction backoff
    since it ended passed (``TIDEMARK_CORRECTION_BACKOFF_S``): not when a run asked again for it
    already, nor when a run built every one of its days since it ended. A run that was itself
    asked again is not asked a third time: it is said instead.

    Args:
        instance: the Dagster instance.
        earliest: the first partition day (ISO); a run whose days all precede it is left.
        now: the time the backoff is measured at (default: now).

    Returns:
        (run requests, one line per run not asked again, what to do).
    """
    from orchestration.defs.reconciliation.runs import ENDED_UNDONE, ended_at, range_days
    from tidemark.reconciliation.days import retry_policy

    now = now or datetime.now(UTC)
    wait = retry_policy().wait(1)
    requests, said = [], []
    for record in instance.get_run_records(dg.RunsFilter(
            job_name=daily_marts_job.name, statuses=ENDED_UNDONE,
            tags={REASON_TAG: CLOSURE_REASON}), limit=LOOK_BACK):
        run = record.dagster_run
        first, last = run.tags.get(PARTITION_RANGE_START), run.tags.get(PARTITION_RANGE_END)
        marts = sorted(k.path[-1] for k in run.asset_selection or ())
        if not first or not last or not marts or (earliest is not None and last < earliest):
            continue
        ended = ended_at(record)
        if ended + wait > now or instance.get_runs_count(dg.RunsFilter(
                tags={RETRY_OF: run.run_id})):
            continue
        days = [d.isoformat() for d in range_days(first, last)]
        if _built_since(instance, marts, days, ended):
            continue
        if run.tags.get(RETRY_OF):
            said.append(f"the closure run {run.run_id} of marts.{', marts.'.join(marts)} for "
                        f"{first}..{last} ended {run.status.value}, and it was the retry of "
                        f"{run.tags[RETRY_OF]}: not asked again. Read its log, then re-run "
                        f"those days (the daily_marts job or a backfill of the partitions).")
            continue
        requests.append(dg.RunRequest(
            run_key=f"closed-again-{run.run_id}", job_name=daily_marts_job.name,
            asset_selection=[mart_key(m) for m in marts],
            tags={**range_tags(first, last), REASON_TAG: CLOSURE_REASON,
                  RETRY_OF: run.run_id}))
    return requests, said


def _built_since(instance: dg.DagsterInstance, marts: list[str], days: list[str],
                 since: datetime) -> bool:
    """Whether a run materialised every one of ``days`` of every one of ``marts`` after
    ``since``."""
    for mart in marts:
        records = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=mart_key(mart), asset_partitions=days,
            after_timestamp=since.timestamp()), limit=10_000).records
        if {r.partition_key for r in records} != set(days):
            return False
    return True


@dg.sensor(name="closed_days_sensor", minimum_interval_seconds=120, jobs=[daily_marts_job],
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Builds each daily mart's days once the watermarks of every table it "
                       "reads have passed their end (closed days).")
def closed_days_sensor(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Request a run of the marts whose last closed day moved on, and again (once) a closure
    run that ended FAILURE or CANCELED (:func:`closure_retries`)."""
    from orchestration.defs.dbt.project import manifest_path
    from tidemark.reconciliation.finality import read_finality

    try:
        final = read_finality(tidemark.urls().landing_app, manifest_path())
    except psycopg.OperationalError as exc:
        return dg.SkipReason(unreachable(exc))
    requests, cursor = closure_requests(final, context.cursor, partitions_start())
    again, said = closure_retries(context.instance, partitions_start())
    for line in said:
        context.log.warning(line)
    if not requests and not again:
        return dg.SensorResult(cursor=cursor, skip_reason=" ".join(
            ["No day closed since the last look.", *said]))
    return dg.SensorResult(run_requests=requests + again, cursor=cursor)
