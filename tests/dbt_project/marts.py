"""Read marts from landing and compare them with expected rows (exact, floats to 1e-9)."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import psycopg
from psycopg import sql

Rows = dict[tuple, dict[str, Any]]

# mart -> (key columns, measures, day column or None)
MARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "fct_daily_store_revenue": (
        ("order_date", "store_id"),
        ("order_count", "cancelled_order_count", "cancellation_rate", "gross_revenue",
         "refund_amount", "net_revenue"), "order_date"),
    "fct_daily_payments": (
        ("payment_date", "method", "payment_kind", "status"), ("payment_count", "amount"),
        "payment_date"),
    "fct_daily_delivery_sla": (
        ("promised_date", "store_id"),
        ("delivery_count", "delivered_count", "on_time_count", "late_count", "on_time_share",
         "p50_delay_minutes", "p90_delay_minutes", "worst_delay"), "promised_date"),
    "fct_daily_funnel": (
        ("event_date",),
        ("session_count", "cart_count", "checkout_count", "event_count", "late_event_count"),
        "event_date"),
    "dim_customers": (("customer_id",), ("order_count", "lifetime_gross_revenue"), None),
    "dim_stores": (("store_id",), ("store_name", "city", "region", "opened_at", "is_active"),
                   None),
}


def read_mart(landing_url: str, mart: str, first: date | None = None,
              last: date | None = None) -> Rows:
    """Rows of ``marts.<mart>`` keyed by its key columns (days in [first, last] if given)."""
    keys, measures, day_column = MARTS[mart]
    query = sql.SQL("select {cols} from {rel}").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in keys + measures),
        rel=sql.Identifier("marts", mart))
    params: dict[str, Any] = {}
    if day_column and first is not None:
        query += sql.SQL(" where {day} between %(first)s and %(last)s").format(
            day=sql.Identifier(day_column))
        params = {"first": first, "last": last}
    with psycopg.connect(landing_url) as conn:
        rows = conn.execute(query, params).fetchall()
    width = len(keys)
    return {tuple(row[:width]): dict(zip(measures, row[width:], strict=True)) for row in rows}


def assert_rows_equal(actual: Rows, expected: Rows, what: str) -> None:
    """Assert same keys and same measures; floats may differ by 1e-9 (relative)."""
    missing, extra = expected.keys() - actual.keys(), actual.keys() - expected.keys()
    assert not missing and not extra, (
        f"{what}: keys differ; missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
    diffs = []
    for key, want in expected.items():
        got = actual[key]
        for name, value in want.items():
            other = got[name]
            if isinstance(value, float) or isinstance(other, float):
                same = (value is None and other is None) or (
                    value is not None and other is not None
                    and math.isclose(float(value), float(other), rel_tol=1e-9, abs_tol=1e-9))
            else:
                same = value == other
            if not same:
                diffs.append(f"{key} {name}: mart {other!r} != expected {value!r}")
    assert not diffs, f"{what}: {len(diffs)} differences, e.g. " + "; ".join(diffs[:5])
