"""``closed_days_sensor`` (running by default): builds a mart's days as the watermarks close them.

The nightly schedule builds yesterday at a fixed hour, closed or not (reconciliation then compares
only closed days and serving keeps the rest provisional); this sensor builds each mart's days
once they are closed (``tidemark.reconciliation.finality``): when a mart's last closed day moves
on, one ``daily_marts`` run covers the newly closed days of that mart. The first evaluation only
records where each mart stands (history is the nightly batch's and backfills' job).
"""

import json
from datetime import date, timedelta

import dagster as dg
import psycopg

from orchestration.defs.dbt.jobs import daily_marts_job
from orchestration.defs.dbt.partitions import partitions_start, range_tags
from orchestration.defs.keys import mart_key
from orchestration.defs.resources import TidemarkResource, unreachable
from tidemark.reconciliation.finality import Finality


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
            tags={**range_tags(first, last), "tidemark/reason": "days closed"}))
    return requests, json.dumps(after, sort_keys=True)


@dg.sensor(name="closed_days_sensor", minimum_interval_seconds=120, jobs=[daily_marts_job],
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Builds each daily mart's days once the watermarks of every table it "
                       "reads have passed their end (closed days).")
def closed_days_sensor(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Request a run of the marts whose last closed day moved on."""
    from orchestration.defs.dbt.project import manifest_path
    from tidemark.reconciliation.finality import read_finality

    try:
        final = read_finality(tidemark.urls().landing_app, manifest_path())
    except psycopg.OperationalError as exc:
        return dg.SkipReason(unreachable(exc))
    requests, cursor = closure_requests(final, context.cursor, partitions_start())
    if not requests:
        return dg.SensorResult(cursor=cursor, skip_reason="No day closed since the last look.")
    return dg.SensorResult(run_requests=requests, cursor=cursor)
