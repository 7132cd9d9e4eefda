"""The daily partitions of the marts and the day windows of batch runs."""


import os
from datetime import date, timedelta

import dagster as dg

from orchestration.defs.errors import DefinitionsError

DAILY_TAG = "daily"
PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"


def partitions_start() -> str:
    """First day of the daily partitions: ``TIDEMARK_PARTITIONS_START`` (default 2026-01-01)."""
    raw = os.environ.get("TIDEMARK_PARTITIONS_START", "").strip() or "2026-01-01"
    try:
        date.fromisoformat(raw)
    except ValueError:
        raise DefinitionsError(f"TIDEMARK_PARTITIONS_START must be a date like 2026-01-01; "
                               f"got {raw!r}.") from None
    return raw


def correction_days() -> int:
    """Days before yesterday the nightly batch re-runs (``TIDEMARK_CORRECTION_DAYS``, 3)."""
    raw = os.environ.get("TIDEMARK_CORRECTION_DAYS", "").strip() or "3"
    if not raw.isdigit():
        raise DefinitionsError(f"TIDEMARK_CORRECTION_DAYS must be a whole number; got {raw!r}.")
    return int(raw)


DAILY = dg.DailyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")


def day_vars(window: dg.TimeWindow) -> dict[str, str]:
    """dbt vars ``min_date``/``max_date`` (inclusive ISO days) of a partition time window."""
    last = window.end - timedelta(days=1)
    return {"min_date": window.start.date().isoformat(), "max_date": last.date().isoformat()}


def batch_window(today: date, days_back: int | None = None) -> tuple[str, str]:
    """(first, last) partition keys of the nightly batch: yesterday and the correction window."""
    days_back = correction_days() if days_back is None else days_back
    start = date.fromisoformat(partitions_start())
    last = today - timedelta(days=1)
    first = max(start, last - timedelta(days=days_back))
    return first.isoformat(), last.isoformat()


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover partitions ``first`` .. ``last``."""
    return {PARTITION_RANGE_START: first, PARTITION_RANGE_END: last}
