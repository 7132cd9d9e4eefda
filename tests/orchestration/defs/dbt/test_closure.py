"""``closed_days_sensor``: a mart's days are requested once, when the watermarks close them."""

from __future__ import annotations

import json
from datetime import date

import dagster as dg
import pytest

from tidemark.reconciliation.finality import Finality

# The session's stack first: it sets TIDEMARK_PARTITIONS_START, which the closure sensor's module
# reads once, at import (through the daily partitions).
pytestmark = pytest.mark.usefixtures("orch")


def closure_requests(*args, **kwargs):  # imported late, see the docstring
    """``orchestration.defs.dbt.closure.closure_requests``, imported when a test runs: its
    module fixes the daily partitions' start at import, which must follow the session's
    ``TIDEMARK_PARTITIONS_START`` (set by the ``orch`` fixture), not collection time."""
    from orchestration.defs.dbt.closure import closure_requests as requests

    return requests(*args, **kwargs)


def _final(closed: date | None) -> dict[str, Finality]:
    return {"fct_daily_store_revenue": Finality("fct_daily_store_revenue", closed,
                                                "shop.orders", None)}


def test_first_look_records_and_requests_nothing() -> None:
    requests, cursor = closure_requests(_final(date(2026, 12, 1)), None)
    assert requests == []
    assert json.loads(cursor) == {"fct_daily_store_revenue": "2026-12-01"}


def test_newly_closed_days_are_requested_once() -> None:
    _, cursor = closure_requests(_final(date(2026, 11, 29)), None)
    same, cursor = closure_requests(_final(date(2026, 11, 29)), cursor)
    assert same == []
    requests, cursor = closure_requests(_final(date(2026, 12, 1)), cursor)
    assert len(requests) == 1
    request = requests[0]
    assert request.asset_selection == [dg.AssetKey(["marts", "fct_daily_store_revenue"])]
    assert request.partition_key_range == dg.PartitionKeyRange("2026-11-30", "2026-12-01")
    again, _ = closure_requests(_final(date(2026, 12, 1)), cursor)
    assert again == []


def test_nothing_closed_and_partitions_start_bound() -> None:
    _, cursor = closure_requests(_final(date(2026, 11, 20)), None)
    assert closure_requests(_final(None), cursor)[0] == []
    requests, _ = closure_requests(_final(date(2026, 11, 25)), cursor, earliest="2026-11-24")
    assert requests[0].partition_key_range == dg.PartitionKeyRange("2026-11-24", "2026-11-25")


def _ended_closure_run(instance, day: str, status, **tags: str) -> dg.DagsterRun:
    """A closure run of ``fct_daily_store_revenue`` for ``day`` that ended with ``status`` (a
    stop of ``tidemark up`` cancels the runs in flight)."""
    import uuid

    from orchestration.defs.dbt.partitions import range_tags

    run = dg.DagsterRun(job_name="daily_marts", run_id=str(uuid.uuid4()), status=status,
                        tags={**range_tags(day, day), "tidemark/reason": "days closed", **tags},
                        asset_selection=frozenset({dg.AssetKey(["marts",
                                                                "fct_daily_store_revenue"])}))
    instance.add_run(run)
    return run


def test_a_closure_run_canceled_by_a_stop_is_asked_again_once(orch, monkeypatch) -> None:
    """A closure run canceled by a stop of ``tidemark up``: the cursor had moved past its day,
    so ``closed_days_sensor`` never asked for it again (only the next ``tidemark up``'s
    correction window covered it). After the restart it asks again, once: not again while a
    run asked for it exists, not a third time when that one did not succeed either (said
    instead), and not for a day a run built since."""
    from orchestration.defs.dbt.closure import closed_days_sensor

    monkeypatch.setenv("TIDEMARK_CORRECTION_BACKOFF_S", "0")
    mart = dg.AssetKey(["marts", "fct_daily_store_revenue"])
    day = orch.days[-3].isoformat()
    with dg.instance_for_test() as instance:
        canceled = _ended_closure_run(instance, day, dg.DagsterRunStatus.CANCELED)

        def tick():
            return closed_days_sensor(dg.build_sensor_context(
                instance=instance, resources={"tidemark": orch.resource}))

        [again] = tick().run_requests
        assert again.asset_selection == [mart]
        assert again.partition_key_range == dg.PartitionKeyRange(day, day)
        assert again.tags["tidemark/retry_of"] == canceled.run_id
        assert again.tags["tidemark/reason"] == "days closed"
        assert again.run_key == f"closed-again-{canceled.run_id}"

        # the retry was launched and a stop canceled it too: not asked a third time, said
        _ended_closure_run(instance, day, dg.DagsterRunStatus.CANCELED,
                           **{"tidemark/retry_of": canceled.run_id})
        result = tick()
        assert not result.run_requests
        assert "not asked again" in result.skip_reason.skip_message, result.skip_reason
        assert canceled.run_id in result.skip_reason.skip_message

        # a day some run built after the failure is not asked for
        other = orch.days[-4].isoformat()
        _ended_closure_run(instance, other, dg.DagsterRunStatus.FAILURE)
        instance.report_runless_asset_event(dg.AssetMaterialization(mart, partition=other))
        assert not tick().run_requests
