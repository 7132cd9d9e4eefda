"""A small, deterministic landing database built without ingestion (development fixture).

The real tests fill landing with the demo seeder and the real ingestion (see ``conftest.py``).
This fixture builds the same landing shape directly: the mirror ``shop.<table>`` from the demo
schema (orchestration/demo/schema.sql, created with ``search_path = shop``) and an empty
changelog ``cdc.shop__<table>`` per table, then fills the mirror with generated rows in SQL:
stores, customers, products, orders of every status, lines, charges and refunds (some failed),
deliveries early and late, and app events with re-sent duplicates and late arrivals.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from orchestration.demo.schema import DEMO_TABLES, SCHEMA_SQL

CDC_COLUMNS = sql.SQL(
    "_op char(1) not null, _lsn pg_lsn not null, _commit_lsn pg_lsn not null, "
    "_commit_at timestamptz not null, _txid bigint not null, "
    "_ingested_at timestamptz not null default now()"
)

GENERATE = """
select setseed(%(seed)s);
insert into shop.stores
select s, 'Store ' || s, 'City ' || (s %% 3), 'Region ' || (s %% 2),
       timestamptz '2025-01-01', s <> 5
from generate_series(1, 5) s;
insert into shop.customers
select c, 'Customer ' || c, 'c' || c || '@example.com', 'City ' || (c %% 3),
       timestamptz '2025-06-01' + c * interval '1 hour',
       timestamptz '2025-06-01' + c * interval '1 hour'
from generate_series(1, 200) c;
insert into shop.products
select p, 'Product ' || p, 'Cat ' || (p %% 4), (1 + p * 1.25)::numeric(12, 2), '{}', true
from generate_series(1, 20) p;

insert into shop.orders
select o.order_id, 1 + floor(random() * 5)::int, 1 + floor(random() * 200)::int,
       (array['placed', 'paid', 'delivered', 'delivered', 'delivered', 'cancelled'])
           [1 + floor(random() * 6)::int],
       o.placed_at, o.placed_at + interval '50 minutes', 0, null
from (
    select d * %(per_day)s + n as order_id,
           %(first_day)s::date::timestamptz + d * interval '1 day'
               + floor(random() * 86399) * interval '1 second' as placed_at
    from generate_series(0, %(days)s - 1) d, generate_series(1, %(per_day)s) n
) o;
insert into shop.order_items
select o.order_id, l, 1 + floor(random() * 20)::int, 1 + floor(random() * 3)::int,
       (1 + floor(random() * 20) * 1.25)::numeric(12, 2)
from shop.orders o, generate_series(1, 1 + (o.order_id %% 3)::int) l;
update shop.orders o set total_amount = i.total
from (select order_id, sum(quantity * unit_price) as total from shop.order_items group by 1) i
where i.order_id = o.order_id;

insert into shop.payments
select o.order_id, o.order_id, 'charge',
       (array['card', 'wallet', 'voucher'])[1 + (o.order_id %% 3)::int], null, o.total_amount,
       case when o.status = 'placed' then 'authorized' when o.order_id %% 17 = 0 then 'failed'
            when o.order_id %% 2 = 0 then 'settled' else 'captured' end,
       o.placed_at + interval '1 minute', o.placed_at + interval '2 minutes'
from shop.orders o;
-- Refunds: every cancelled order, and a few delivered ones in part; some refunds fail; some are
-- created days after the order (they still count on the order's own day).
insert into shop.payments
select 1000000000 + o.order_id, o.order_id, 'refund', 'card', null,
       case when o.status = 'cancelled' then o.total_amount else round(o.total_amount / 3, 2) end,
       case when o.order_id %% 5 = 0 then 'failed' else 'settled' end,
       o.placed_at + (o.order_id %% 3) * interval '1 day' + interval '3 hours',
       o.placed_at + (o.order_id %% 3) * interval '1 day' + interval '3 hours'
from shop.orders o
where (o.status = 'cancelled' or (o.status = 'delivered' and o.order_id %% 7 = 0))
  and o.total_amount > 0;

insert into shop.deliveries
select o.order_id, o.order_id, o.store_id, 1 + (o.order_id %% 10)::int,
       case o.status when 'delivered' then 'delivered' when 'cancelled' then 'failed'
            when 'paid' then 'dispatched' else 'pending' end,
       o.placed_at + interval '45 minutes',
       case when o.status in ('delivered', 'paid') then o.placed_at + interval '10 minutes' end,
       case when o.status = 'delivered'
            then o.placed_at + interval '45 minutes'
                 + (floor(random() * 61) - 20) * interval '1 minute' end,
       o.placed_at + interval '50 minutes'
from shop.orders o;

-- Sessions of customers: session_started, 1-3 cart_item_added, sometimes checkout_started.
-- Every 11th session arrives two days late; every 13th event is re-sent (same event_id).
with sessions as (
    select s, gen_random_uuid() as session_id, 1 + floor(random() * 200)::int as customer_id,
           %(first_day)s::date::timestamptz + floor(random() * %(days)s) * interval '1 day'
               + floor(random() * 86000) * interval '1 second' as started_at
    from generate_series(1, %(days)s * %(per_day)s) s
), events as (
    select s.*, e.kind, e.n, gen_random_uuid() as event_id,
           s.started_at + e.n * interval '1 minute' as event_time
    from sessions s
    cross join lateral (
        select 'session_started' as kind, 0 as n
        union all select 'cart_item_added', k from generate_series(1, 1 + (s.s %% 3)::int) k
        union all select 'checkout_started', 9 where s.s %% 2 = 0
    ) e
)
insert into shop.app_events (event_id, event_type, event_time, received_at, customer_id,
                             session_id, payload)
select event_id, kind, event_time,
       event_time + case when s %% 11 = 0 then interval '2 days' else interval '2 seconds' end,
       customer_id, session_id,
       case kind
           when 'session_started' then jsonb_build_object('platform', 'ios', 'app_version', '1.2.3')
           when 'cart_item_added' then jsonb_build_object('cart_id', 'cart-' || s,
               'product_id', 1 + n, 'quantity', 1)
           else jsonb_build_object('cart_id', 'cart-' || s, 'item_count', n, 'cart_value', 12.5)
       end
from events, generate_series(1, case when s %% 13 = 0 then 2 else 1 end) copy_n;
"""


def build_landing_fixture(landing_dsn: str, first_day: str, days: int, per_day: int,
                          seed: float = 0.42) -> None:
    """Create the landing shape (mirror and empty changelog) and fill the mirror.

    Args:
        landing_dsn: superuser URL of an empty landing database.
        first_day: ISO date of the first generated day (UTC).
        days: number of days of orders.
        per_day: orders (and app sessions) per day.
        seed: ``setseed`` value, so the data is the same on every run.
    """
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        conn.execute("create schema if not exists shop")
        conn.execute("create schema if not exists cdc")
        conn.execute("set search_path = shop")
        conn.execute(SCHEMA_SQL.read_text())
        conn.execute("set search_path = public")
        for table in DEMO_TABLES:
            conn.execute(sql.SQL("create table if not exists {} (like {}, {})").format(
                sql.Identifier("cdc", f"shop__{table}"), sql.Identifier("shop", table),
                CDC_COLUMNS))
        with psycopg.ClientCursor(conn) as cur:  # several statements: bind client-side
            cur.execute(GENERATE, {"seed": seed, "first_day": first_day, "days": days,
                                   "per_day": per_day})
