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
