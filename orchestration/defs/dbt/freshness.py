"""Freshness of the daily marts: yesterday's partition by a deadline.

Two mechanisms, both configured by ``TIDEMARK_MART_DEADLINE_CRON`` (default ``0 9 * * *``, UTC):

* a :class:`~dagster.FreshnessPolicy` (cron) on every daily mart, evaluated by the daemon on the
  asset as a whole: materialised in the 24 hours before each deadline;
* a ``freshness_check`` per daily mart (``build_time_partition_freshness_checks``) that fails when
  the partition of the day before the deadline is not materialised by then; its metadata names
  the overdue partition and deadline. A sensor evaluates them (running by default).

Ingestion freshness is on the ``shop/<table>`` assets (``orchestration.defs.ingestion``): a
time-window policy from the contract and the ``ingestion_lag`` check.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import timedelta
from functools import lru_cache

import dagster as dg

from tidemark.settings import load_settings


def deadline_cron() -> str:
    """The daily marts' deadline as a cron string (UTC, ``TIDEMARK_MART_DEADLINE_CRON``)."""
    return load_settings().mart_deadline_cron


def mart_freshness_policy() -> dg.FreshnessPolicy:
    """Cron freshness policy of a daily mart: materialised in the 24 h before the deadline."""
    return _cron_policy(deadline_cron())


@lru_cache(maxsize=8)
def _cron_policy(cron: str) -> dg.FreshnessPolicy:
    # Building one validates the cron over a year of ticks (~8 ms): once per cron string.
    return dg.FreshnessPolicy.cron(deadline_cron=cron, lower_bound_delta=timedelta(hours=24),
                                   timezone="UTC")


def mart_freshness_checks(daily_assets: list[dg.AssetsDefinition]
                          ) -> Sequence[dg.AssetChecksDefinition]:
    """The per-partition ``freshness_check`` of each daily mart."""
    with warnings.catch_warnings():  # deprecated in 1.13 but still the per-partition check
        warnings.simplefilter("ignore")
        return dg.build_time_partition_freshness_checks(
            assets=daily_assets, deadline_cron=deadline_cron(), timezone="UTC",
            severity=dg.AssetCheckSeverity.ERROR)


def mart_freshness_sensor(checks: Sequence[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    """``mart_freshness_sensor`` (running by default): evaluates the marts' freshness checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dg.build_sensor_for_freshness_checks(
            freshness_checks=checks, name="mart_freshness_sensor",
            default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=300)
