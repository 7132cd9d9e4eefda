"""The daily partitions of the marts and the day windows of batch runs.

Partitions start at ``TIDEMARK_PARTITIONS_START`` if set, else at the first day of data that
``tidemark up`` recorded in ``$TIDEMARK_HOME/partitions_start``, else (no data seen yet)
:data:`FALLBACK_DAYS` days before today. They end at the last complete UTC day: today is open
(provisional, in the live views) until it ends.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from tidemark.settings import load_settings

DAILY_TAG = "daily"
PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"
FALLBACK_DAYS = 30


def partitions_start() -> str:
    """First day of the daily partitions (ISO), see the module docstring."""
    first = load_settings().first_partition_day()
    if first is None:
        first = datetime.now(UTC).date() - timedelta(days=FALLBACK_DAYS)
    return first.isoformat()


DAILY = dg.DailyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")


def day_vars(window: dg.TimeWindow) -> dict[str, str]:
    """dbt vars ``min_date``/``max_date`` (inclusive ISO days) of a partition time window."""
    last = window.end - timedelta(days=1)
    return {"min_date": window.start.date().isoformat(), "max_date": last.date().isoformat()}


def batch_window(today: date, days_back: int | None = None) -> tuple[str, str]:
    """(first, last) partition keys of the nightly batch: yesterday and the correction window."""
    days_back = load_settings().correction_days if days_back is None else days_back
    start = date.fromisoformat(DAILY.start.date().isoformat())
    last = today - timedelta(days=1)
    first = max(start, last - timedelta(days=days_back))
    return first.isoformat(), last.isoformat()


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover partitions ``first`` .. ``last``."""
    return {PARTITION_RANGE_START: first, PARTITION_RANGE_END: last}
