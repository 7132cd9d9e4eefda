"""The reconciliation job's own retries (``runs.reconciliation_retry``): given up after
``TIDEMARK_CORRECTION_ATTEMPTS`` failed runs in a row, asked again by `tidemark reconcile retry
--job` (its failed runs so far no longer count; the sensor launches it at its next tick)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg

from tests.support import create_database
from tidemark.reconciliation.days import job_asked_again_at


def _fail(instance: dg.DagsterInstance) -> str:
    run = dg.DagsterRun(job_name="reconciliation", run_id=str(uuid.uuid4()),
                        status=dg.DagsterRunStatus.NOT_STARTED)
    instance.add_run(run)
    instance.report_run_failed(run, "Failed to start")
    return run.run_id


def _retry_job(landing: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidemark.cli.main", "reconcile", "retry",
                           "--job", "--dsn", landing], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120, check=False)


def test_reconcile_retry_job_asks_the_given_up_reconciliation_job_again(pg) -> None:
    # imported here, not at collection: the dbt definitions fix their daily partitions' start
    # at import, from the home of whoever imports them first (test_definitions checks it)
    from orchestration.defs.reconciliation.runs import reconciliation_retry

    landing = create_database(pg, "q38_job_retry")
    later = datetime.now(UTC) + timedelta(days=1)
    with dg.instance_for_test() as instance:
        runs = [_fail(instance) for _ in range(3)]
        given_up = reconciliation_retry(instance, "reconciliation", now=later,
                                        asked_at=job_asked_again_at(landing, "reconciliation"))
        assert isinstance(given_up, str) and "tidemark reconcile retry --job" in given_up

        out = _retry_job(landing)
        assert out.returncode == 0, out.stderr
        assert "reconciliation job is asked again" in out.stdout
        asked = job_asked_again_at(landing, "reconciliation")
        again = reconciliation_retry(instance, "reconciliation", asked_at=asked)  # at once
        assert isinstance(again, dg.RunRequest) and again.job_name == "reconciliation"
        assert again.tags == {"tidemark/retry_of": runs[-1]}

        # the run it asked for fails too: counted from the reset, asked again after a backoff
        _fail(instance)
        assert reconciliation_retry(instance, "reconciliation", asked_at=asked) is None
        assert isinstance(reconciliation_retry(instance, "reconciliation", now=later,
                                               asked_at=asked), dg.RunRequest)
        runs += [_fail(instance), _fail(instance)]
        assert isinstance(reconciliation_retry(instance, "reconciliation", now=later,
                                               asked_at=asked), str)
