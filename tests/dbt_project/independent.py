"""Independent computations of the marts straight from the SOURCE tables.

Written apart from the dbt SQL on purpose: plain SQL with correlated subqueries where dbt joins
intermediate models, and Python (not SQL) for deduplication, percentiles and shares. Each
function returns ``{key tuple: {measure: value}}`` for the days in ``[first, last]``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
from psycopg import sql

Rows = dict[tuple, dict[str, Any]]


def _fetch(source_url: str, query: sql.Composable, params: dict) -> list[dict[str, Any]]:
    with psycopg.connect(source_url) as conn, conn.cursor(
            row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def store_revenue(source_url: str, schema: str, first: date, last: date) -> Rows:
    """Per (order_date, store_id): counts, cancellation rate, gross, refunds and net revenue."""
    query = sql.SQL("""
        select (o.placed_at at time zone 'UTC')::date as order_date, o.store_id,
               count(*) as order_count,
               sum(case when o.status = 'cancelled' then 1 else 0 end) as cancelled_order_count,
               sum(case when o.status <> 'cancelled' then o.total_amount else 0 end)
                   as gross_revenue,
               sum((select coalesce(sum(p.amount), 0) from {s}.payments p
                    where p.order_id = o.order_id and p.payment_kind = 'refund'
                      and p.status <> 'failed')) as refund_amount
        from {s}.orders o
        where (o.placed_at at time zone 'UTC')::date between %(first)s and %(last)s
        group by 1, 2
    """).format(s=sql.Identifier(schema))
    out: Rows = {}
    for row in _fetch(source_url, query, {"first": first, "last": last}):
        rate = (Decimal(row["cancelled_order_count"]) / row["order_count"]).quantize(
            Decimal("0.0001"), rounding=ROUND_HALF_UP)
        out[(row["order_date"], row["store_id"])] = {
            "order_count": row["order_count"],
            "cancelled_order_count": row["cancelled_order_count"],
            "cancellation_rate": rate,
            "gross_revenue": row["gross_revenue"], "refund_amount": row["refund_amount"],
            "net_revenue": row["gross_revenue"] - row["refund_amount"]}
    return out


def payments(source_url: str, schema: str, first: date, last: date) -> Rows:
    """Per (payment_date, method, payment_kind, status): payment_count, amount."""
    query = sql.SQL("""
        select created_at, method, payment_kind, status, amount from {s}.payments
        where created_at >= %(first)s::date::timestamp at time zone 'UTC'
          and created_at < (%(last)s::date + 1)::timestamp at time zone 'UTC'
    """).format(s=sql.Identifier(schema))
    out: Rows = defaultdict(lambda: {"payment_count": 0, "amount": Decimal(0)})
    for row in _fetch(source_url, query, {"first": first, "last": last}):
        day = row["created_at"].astimezone(UTC).date()
        cell = out[(day, row["method"], row["payment_kind"], row["status"])]
        cell["payment_count"] += 1
        cell["amount"] += row["amount"]
    return dict(out)


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def delivery_sla(source_url: str, schema: str, first: date, last: date) -> Rows:
    """Per (promised_date, store_id): counts, on-time share, p50/p90 delay, worst delay."""
    query = sql.SQL("""
        select promised_at, store_id, delivered_at from {s}.deliveries
        where (promised_at at time zone 'UTC')::date between %(first)s and %(last)s
    """).format(s=sql.Identifier(schema))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in _fetch(source_url, query, {"first": first, "last": last}):
        groups[(row["promised_at"].astimezone(UTC).date(), row["store_id"])].append(row)
    out: Rows = {}
    for key, rows in groups.items():
        delivered = [r for r in rows if r["delivered_at"] is not None]
        lateness = [r["delivered_at"] - r["promised_at"] for r in delivered]
        delays = [d.total_seconds() / 60 for d in lateness]
        on_time = sum(1 for d in lateness if d.total_seconds() <= 0)
        out[key] = {
            "delivery_count": len(rows), "delivered_count": len(delivered),
            "on_time_count": on_time, "late_count": len(delivered) - on_time,
            "on_time_share": on_time / len(delivered) if delivered else None,
            "p50_delay_minutes": percentile_cont(delays, 0.5),
            "p90_delay_minutes": percentile_cont(delays, 0.9),
            "worst_delay": max(lateness) if lateness else None}
    return out


def funnel(source_url: str, schema: str, first: date, last: date) -> Rows:
    """Per event_date: sessions, carts, checkouts, all and late events (deduplicated)."""
    query = sql.SQL("""
        select outbox_id, event_id, event_type, event_time, received_at, session_id,
               payload ->> 'cart_id' as cart_id
        from {s}.app_events
    """).format(s=sql.Identifier(schema))
    first_copy: dict[Any, dict] = {}
    for row in _fetch(source_url, query, {}):
        seen = first_copy.get(row["event_id"])
        if seen is None or (row["received_at"], row["outbox_id"]) < (seen["received_at"],
                                                                     seen["outbox_id"]):
            first_copy[row["event_id"]] = row
    days: dict[date, dict[str, Any]] = defaultdict(lambda: {
        "session_count": set(), "cart_count": set(), "checkout_count": set(), "event_count": 0,
        "late_event_count": 0})
    for row in first_copy.values():
        day = row["event_time"].astimezone(UTC).date()
        if not first <= day <= last:
            continue
        cell = days[day]
        cell["event_count"] += 1
        cell["late_event_count"] += row["received_at"].astimezone(UTC).date() > day
        bucket = {"session_started": ("session_count", row["session_id"]),
                  "cart_item_added": ("cart_count", row["cart_id"]),
                  "checkout_started": ("checkout_count", row["cart_id"])}.get(row["event_type"])
        if bucket and bucket[1] is not None:
            cell[bucket[0]].add(bucket[1])
    return {(day,): {name: len(v) if isinstance(v, set) else v for name, v in cell.items()}
            for day, cell in days.items()}


def customers(source_url: str, schema: str) -> Rows:
    """Per customer_id: order_count and lifetime_gross_revenue (orders not cancelled)."""
    query = sql.SQL("""
        select c.customer_id,
               (select count(*) from {s}.orders o where o.customer_id = c.customer_id)
                   as order_count,
               (select coalesce(sum(o.total_amount), 0) from {s}.orders o
                where o.customer_id = c.customer_id and o.status <> 'cancelled')
                   as lifetime_gross_revenue
        from {s}.customers c
    """).format(s=sql.Identifier(schema))
    return {(row.pop("customer_id"),): row for row in _fetch(source_url, query, {})}


def stores(source_url: str, schema: str) -> Rows:
    """Per store_id: the store's attributes."""
    query = sql.SQL("select store_id, store_name, city, region, opened_at, is_active "
                    "from {s}.stores").format(s=sql.Identifier(schema))
    return {(row.pop("store_id"),): row for row in _fetch(source_url, query, {})}

