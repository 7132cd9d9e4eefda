"""Finality: a mart day closes only when the watermarks of every table it reads passed its end
(UTC); which tables a mart reads comes from the real dbt manifest."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tidemark.reconciliation.compare import closed_window
from tidemark.reconciliation.finality import finality, mart_event_tables

MARTS = {"fct_daily_store_revenue": [("shop", "orders"), ("shop", "payments")],
         "fct_daily_reference": []}
NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


def _marks(orders: datetime | None, payments: datetime | None) -> dict:
    return {("shop", "orders"): orders, ("shop", "payments"): payments}


def test_day_closes_only_when_every_watermark_passed_its_end() -> None:
    midnight = datetime(2026, 12, 2, tzinfo=UTC)
    before = finality(MARTS, _marks(midnight - timedelta(seconds=1), midnight), NOW)
    revenue = before["fct_daily_store_revenue"]
    assert revenue.closed_through == date(2026, 11, 30)
    assert not revenue.is_closed(date(2026, 12, 1)) and revenue.is_closed(date(2026, 11, 30))
    assert revenue.blocking == "shop.orders"
    after = finality(MARTS, _marks(midnight, midnight + timedelta(hours=3)), NOW)
    assert after["fct_daily_store_revenue"].closed_through == date(2026, 12, 1)
    assert after["fct_daily_store_revenue"].blocking == "shop.orders"


def test_a_table_without_watermark_keeps_every_day_open() -> None:
    f = finality(MARTS, _marks(NOW, None), NOW)["fct_daily_store_revenue"]
    assert f.closed_through is None and f.blocking == "shop.payments"
    assert not f.is_closed(date(2000, 1, 1))


def test_a_mart_without_event_time_tables_closes_at_midnight() -> None:
    f = finality(MARTS, {}, NOW)["fct_daily_reference"]
    assert f.closed_through == date(2026, 12, 1)


def test_reconciliation_window_ends_at_the_last_closed_day() -> None:
    today = date(2026, 12, 2)
    assert closed_window(today, 3, None) == (date(2026, 11, 29), date(2026, 12, 1))
    assert closed_window(today, 3, None, date(2026, 11, 30)) == (date(2026, 11, 28),
                                                               date(2026, 11, 30))
    assert closed_window(today, 3, None, date(2026, 12, 5))[1] == date(2026, 12, 1)
    first, last = closed_window(today, 3, None, None)
    assert first > last  # nothing closed: nothing compared


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    target = tmp_path_factory.mktemp("dbt-target")
    old = os.environ.get("TIDEMARK_DBT_TARGET_PATH")
    os.environ["TIDEMARK_DBT_TARGET_PATH"] = str(target)
    try:
        from orchestration.defs.dbt.project import prepare_manifest

        yield prepare_manifest()
    finally:
        if old is None:
            os.environ.pop("TIDEMARK_DBT_TARGET_PATH", None)
        else:
            os.environ["TIDEMARK_DBT_TARGET_PATH"] = old


def test_marts_read_their_event_time_tables_from_the_manifest(manifest: Path) -> None:
    marts = mart_event_tables(manifest)
    assert ("shop", "orders") in marts["fct_daily_store_revenue"]
    assert ("shop", "deliveries") in marts["fct_daily_delivery_sla"]
    assert ("shop", "app_events") in marts["fct_daily_funnel"]
    assert all(table not in ("stores", "products") for tables in marts.values()
               for _, table in tables), "reference tables have no event time"


def test_at_one_utc_yesterday_is_still_open() -> None:
    """At 01:00 UTC the latest order is at most an hour old: with 2 h of allowed lateness the
    watermark is still inside yesterday, so the last closed day is the day before and the
    reconciliation window ends there (nothing of yesterday is compared or served final)."""
    today = date(2026, 12, 2)
    now = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
    mark = now - timedelta(minutes=5) - timedelta(hours=2)  # latest event 00:55, lateness 2 h
    final = finality(MARTS, _marks(mark, mark), now)["fct_daily_store_revenue"]
    assert final.closed_through == date(2026, 11, 30)
    assert not final.is_closed(today - timedelta(days=1))
    assert closed_window(today, 3, None, final.closed_through) == (date(2026, 11, 28),
                                                                    date(2026, 11, 30))
    at_three = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    later = finality(MARTS, _marks(at_three - timedelta(hours=2), at_three), at_three)
    assert later["fct_daily_store_revenue"].closed_through == date(2026, 12, 1)
