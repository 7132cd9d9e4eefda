"""The daily partitions of the marts and the day windows of batch runs.

Partitions start at ``TIDEMARK_PARTITIONS_START`` if set, else at the first day of data that
``tidemark up`` recorded in ``$TIDEMARK_HOME/partitions_start``, else (no data seen yet)
:data:`FALLBACK_DAYS` days before today. They end at the last complete UTC day: today is open
(provisional, in the live views) until it ends.

Nothing here is computed at import: the start is read when the definitions are built
(:func:`with_current_start`, from ``orchestration.definitions.build_defs``, which Dagster calls
at each load of the code location) and when a schedule or sensor evaluates. A test module that
imports the dbt definitions, or a Dagster started before the first day of data, does not fix
the 30-day fallback for what is built later; ``tidemark up`` records the first day once data
arrives and reloads the code location (``tidemark.stack.partitions``).
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


def daily_partitions() -> dg.DailyPartitionsDefinition:
    """The daily partitions from :func:`partitions_start` as it is now."""
    return dg.DailyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")


def with_current_start(assets: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """``assets`` (daily partitioned) with the daily partitions' start as it is now.

    The ``@dbt_assets`` decorator needs a partitions definition when its module is imported;
    the definitions replace it with this one each time they are built.
    """
    daily = daily_partitions()
    return assets.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=daily))


def day_vars(window: dg.TimeWindow) -> dict[str, str]:
    """dbt vars ``min_date``/``max_date`` (inclusive ISO days) of a partition time window."""
    last = window.end - timedelta(days=1)
    return {"min_date": window.start.date().isoformat(), "max_date": last.date().isoformat()}


def batch_window(today: date, days_back: int | None = None) -> tuple[str, str]:
    """(first, last) partition keys of the nightly batch: yesterday and the correction window."""
    days_back = load_settings().correction_days if days_back is None else days_back
    start = date.fromisoformat(partitions_start())
    last = today - timedelta(days=1)
    first = max(start, last - timedelta(days=days_back))
    return first.isoformat(), last.isoformat()


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover partitions ``first`` .. ``last``."""
    return {PARTITION_RANGE_START: first, PARTITION_RANGE_END: last}
