"""Fixtures of the demo source tests: fresh databases and the shop's consistency rules."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import psycopg
import pytest

from tests.support import create_database
from tidemark.stack.embedded import EmbeddedServer

_counter = itertools.count(1)

# Each query returns the rows that break one rule of a consistent shop (none expected).
CONSISTENCY_RULES = {
    "order total is the sum of its items":
        "select o.order_id from orders o left join (select order_id,"
        " sum(quantity * unit_price) as s from order_items group by order_id) i using (order_id)"
        " where o.total_amount <> coalesce(i.s, -1)",
    "an active delivery only for a paid or delivered order":
        "select d.order_id from deliveries d join orders o using (order_id)"
        " where (d.status in ('pending', 'dispatched') and o.status <> 'paid')"
        " or (d.status = 'delivered' and o.status <> 'delivered')"
        " or (d.status = 'failed' and o.status <> 'cancelled')",
    "a delivered order has a delivered delivery":
        "select o.order_id from orders o left join deliveries d using (order_id)"
        " where o.status = 'delivered' and d.status is distinct from 'delivered'",
    "a paid order has a pending or dispatched delivery and a live charge":
        "select o.order_id from orders o left join deliveries d using (order_id)"
        " where o.status = 'paid' and (d.status is null or d.status not in"
        " ('pending', 'dispatched') or not exists (select from payments p where"
        " p.order_id = o.order_id and p.payment_kind = 'charge' and p.status <> 'failed'))",
    "dispatch and delivery timestamps follow the status":
        "select order_id from deliveries"
        " where (status in ('dispatched', 'delivered', 'failed')) <> (dispatched_at is not null)"
        " or (status = 'delivered') <> (delivered_at is not null)",
    "refunds never exceed the captured charges":
        "select order_id from payments group by order_id having"
        " coalesce(sum(amount) filter (where payment_kind = 'refund'), 0) >"
        " coalesce(sum(amount) filter (where payment_kind = 'charge'"
        " and status in ('captured', 'settled')), 0)",
    "a refund goes back to the charged method and card":
        "select r.payment_id from payments r where r.payment_kind = 'refund' and not exists"
        " (select from payments c where c.order_id = r.order_id and c.payment_kind = 'charge'"
        " and c.status <> 'failed' and c.method = r.method"
        " and c.card_fingerprint is not distinct from r.card_fingerprint)",
    "card fingerprint set exactly for card payments":
        "select payment_id from payments where (method = 'card') <> (card_fingerprint is not null)",
    "a placed order has no live charge":
        "select o.order_id from orders o join payments p using (order_id)"
        " where o.status = 'placed' and p.status <> 'failed'",
    "every order has at least one item":
        "select o.order_id from orders o where not exists"
        " (select from order_items i where i.order_id = o.order_id)",
    "timestamps move forward":
        "select order_id from orders where updated_at < placed_at union all"
        " select payment_id from payments where updated_at < created_at union all"
        " select outbox_id from app_events where received_at < event_time",
    "promise is 30 to 60 minutes after placement":
        "select d.order_id from deliveries d join orders o using (order_id)"
        " where d.promised_at - o.placed_at not between interval '30 minutes'"
        " and interval '60 minutes'",
}

# Outbox rows whose payload breaks its event contract (tests/orchestration only; the real
# contracts live in contracts/).
MALFORMED_EVENT_SQL = """
not case event_type
  when 'session_started' then coalesce(
    payload ->> 'platform' in ('ios', 'android', 'web')
    and jsonb_typeof(payload -> 'app_version') = 'string'
    and payload ->> 'app_version' ~ '^[0-9]+\\.[0-9]+\\.[0-9]+$', false)
  when 'cart_item_added' then coalesce(
    jsonb_typeof(payload -> 'cart_id') = 'string'
    and payload ->> 'cart_id' ~ '^[0-9a-f-]{36}$'
    and jsonb_typeof(payload -> 'product_id') = 'number'
    and (payload ->> 'product_id')::numeric > 0
    and jsonb_typeof(payload -> 'quantity') = 'number'
    and (payload ->> 'quantity')::numeric between 1 and 50, false)
  when 'checkout_started' then coalesce(
    jsonb_typeof(payload -> 'cart_id') = 'string'
    and jsonb_typeof(payload -> 'item_count') = 'number'
    and (payload ->> 'item_count')::numeric >= 1
    and jsonb_typeof(payload -> 'cart_value') = 'number'
    and (payload ->> 'cart_value')::numeric >= 0, false)
  else false end
"""


@pytest.fixture
def fresh_db(pg: EmbeddedServer) -> Callable[[str], str]:
    """A factory of fresh, empty databases on the session server: ``fresh_db(label)`` → URL."""

    def make(label: str) -> str:
        return create_database(pg, f"demo_{label}_{next(_counter)}")

    return make


@pytest.fixture
def broken_rules() -> Callable[[str], dict[str, list]]:
    """``broken_rules(dsn)``: the consistency rules the shop in ``dsn`` breaks (empty: none)."""
    return _broken_rules


@pytest.fixture
def event_shares() -> Callable[[str], dict[str, float | int]]:
    """``event_shares(dsn)``: late/duplicate/malformed counts and shares measured from data."""
    return _event_shares


def _broken_rules(dsn: str) -> dict[str, list]:
    """Rules of a consistent shop that the data in ``dsn`` breaks, with example rows."""
    broken = {}
    with psycopg.connect(dsn) as conn:
        for rule, query in CONSISTENCY_RULES.items():
            rows = conn.execute(query).fetchmany(5)
            if rows:
                broken[rule] = rows
    return broken


def _event_shares(dsn: str) -> dict[str, float | int]:
    """Measure the outbox from the data: first emissions, and late/duplicate/malformed shares.

    A first emission is the row with the smallest outbox_id of its event_id; it is late when its
    event_time lies more than a minute before received_at.
    """
    query = f"""
    with firsts as (
      select distinct on (event_id) * from app_events order by event_id, outbox_id)
    select (select count(*) from app_events),
           count(*),
           count(*) filter (where received_at - event_time > interval '1 minute'),
           count(*) filter (where {MALFORMED_EVENT_SQL})
    from firsts"""
    with psycopg.connect(dsn) as conn:
        rows, firsts, late, malformed = conn.execute(query).fetchone()
    return {"rows": rows, "events": firsts, "late": late, "duplicates": rows - firsts,
            "malformed": malformed, "late_share": late / firsts,
            "duplicate_share": (rows - firsts) / firsts, "malformed_share": malformed / firsts}
