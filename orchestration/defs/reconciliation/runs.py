"""The correction runs in Dagster's run queue: which days of which mart they will rebuild (read by
the correction sensor, to not ask twice, and by the reconciliation check, to tell a drift a run
is about to fix from one a run did not fix)."""

from datetime import date, timedelta

import dagster as dg

from orchestration.defs.dbt.jobs import daily_marts_job
from orchestration.defs.dbt.partitions import PARTITION_RANGE_END, PARTITION_RANGE_START
from orchestration.defs.keys import CORRECTION_TAG

QUEUED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
UNFINISHED = [*QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


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
            days.setdefault(mart, set()).update(d.isoformat() for d in _days(first, last))
    return days


def _days(first: str, last: str) -> list[date]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]
