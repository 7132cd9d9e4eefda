"""The set-based SQL that writes one chunk of order history (see :mod:`tidemark.demo.seed`).

Every value comes from ``pg_temp.rnd(seed, key, salt)`` on ids, so the rows depend only on the
seed, the sizes and the time window — never on plan order. Ids are derived from the order id:
payment ``order_id * 4 + k`` (0 failed attempt, 1 charge, 2 refund), delivery ``order_id``,
outbox row ``order_id * 20 + slot`` (slot 0 session, 1..8 cart lines, 9 checkout; +10 for the
re-emitted copy of a duplicated event).

Each order follows a timeline (placed, paid +1-5 min, dispatched +10-25 min, delivered 10-30 min
later, promised 30-60 min after placement, settled a day after) and one of four variants:
normal (95 %), cancelled before payment (2.5 %), cancelled after payment with a full refund
(1.5 %), delivery failed with a full refund (1 %). Its rows show the state at ``end``.
"""

from __future__ import annotations

# Items of orders lo..hi: 1-8 lines (mostly few), popular products have low ids.
ITEMS = """
create temp table _i on commit drop as
select o.order_id, l.line_number, p.product_id, q.quantity, pr.unit_price
from (select g as order_id,
             1 + floor(7 * pg_temp.rnd(%(seed)s, g, 11) ^ 2)::int as n_lines
      from generate_series(%(lo)s::bigint, %(hi)s::bigint) as g) as o
cross join lateral generate_series(1, o.n_lines) as l (line_number)
cross join lateral (
  select 1 + floor(%(n_products)s
                   * pg_temp.rnd(%(seed)s, o.order_id * 16 + l.line_number, 30) ^ 2)::int
           as product_id) as p
cross join lateral (
  select 1 + floor(4 * pg_temp.rnd(%(seed)s, o.order_id * 16 + l.line_number, 31) ^ 3)::int
           as quantity) as q
join products as pr on pr.product_id = p.product_id
"""

# Orders lo..hi with their whole timeline and the state it has reached at %(end)s.
ORDERS = """
create temp table _o on commit drop as
with base as (
  select g as order_id,
         %(start)s + (x.u + %(amp)s / (2 * pi() * %(days)s)
                      * (sin(2 * pi() * (%(phase)s + %(days)s * x.u))
                         - sin(2 * pi() * %(phase)s)))
                     * %(span_s)s * interval '1 second' as placed_at,
         1 + floor(%(n_customers)s * pg_temp.rnd(%(seed)s, g, 12) ^ 1.6)::bigint as customer_id,
         pg_temp.rnd(%(seed)s, g, 24) as v
  from generate_series(%(lo)s::bigint, %(hi)s::bigint) as g
  cross join lateral (
    select ((g - 1) + pg_temp.rnd(%(seed)s, g, 10)) / %(n_total)s::float8 as u) as x
), timeline as (
  select b.*,
         case when pg_temp.rnd(%(seed)s, b.order_id, 13) < 0.9
              then 1 + floor(%(n_stores)s * pg_temp.rnd(%(seed)s, b.customer_id, 2))::int
              else 1 + floor(%(n_stores)s * pg_temp.rnd(%(seed)s, b.order_id, 14))::int
         end as store_id,
         case when pg_temp.rnd(%(seed)s, b.order_id, 15) < 0.1
              then (%(notes)s::text[])[1 + floor(%(n_notes)s
                                                 * pg_temp.rnd(%(seed)s, b.order_id, 16))::int]
         end as delivery_notes,
         1 + floor(8 * %(n_stores)s * pg_temp.rnd(%(seed)s, b.order_id, 17))::int as courier_id,
         case when b.v < 0.025 then 'before_pay' when b.v < 0.04 then 'after_pay'
              when b.v < 0.05 then 'delivery_failed' else 'normal' end as variant,
         b.placed_at + interval '30 seconds' as attempt_at,
         pg_temp.rnd(%(seed)s, b.order_id, 26) < 0.04 as has_failed_attempt,
         b.placed_at + (60 + 240 * pg_temp.rnd(%(seed)s, b.order_id, 20)) * interval '1 second'
           as paid_at,
         b.placed_at + (600 + 900 * pg_temp.rnd(%(seed)s, b.order_id, 21))
                       * interval '1 second' as dispatched_at,
         b.placed_at + (1800 + 1800 * pg_temp.rnd(%(seed)s, b.order_id, 23))
                       * interval '1 second' as promised_at,
         pg_temp.rnd(%(seed)s, b.order_id, 27) < 0.03 as has_partial_refund,
         pg_temp.rnd(%(seed)s, b.order_id, 28) as method_x
  from base as b
), timeline2 as (
  select t.*,
         t.dispatched_at + (600 + 1200 * pg_temp.rnd(%(seed)s, t.order_id, 22))
                           * interval '1 second' as delivered_at,
         case t.variant
           when 'before_pay' then t.placed_at + (180 + 540 * pg_temp.rnd(%(seed)s, t.order_id, 25))
                                               * interval '1 second'
           when 'after_pay' then t.paid_at + (120 + 180 * pg_temp.rnd(%(seed)s, t.order_id, 25))
                                             * interval '1 second'
           when 'delivery_failed' then t.dispatched_at
                                       + (900 + 1800 * pg_temp.rnd(%(seed)s, t.order_id, 25))
                                       * interval '1 second'
         end as cancel_at
  from timeline as t
), totals as (
  select order_id, count(*)::int as n_lines, sum(quantity)::int as units,
         sum(quantity * unit_price) as total_amount,
         sum(quantity * unit_price) filter (where line_number = 1) as first_line_amount
  from _i group by order_id
)
select t.*, s.n_lines, s.units, s.total_amount, s.first_line_amount,
       t.delivered_at + (3600 + 82800 * pg_temp.rnd(%(seed)s, t.order_id, 29))
                        * interval '1 second' as partial_refund_at,
       case when t.variant = 'after_pay' then t.cancel_at else t.dispatched_at end as capture_at,
       pg_temp.uid(%(seed)s, 'session', t.order_id) as session_id,
       pg_temp.uid(%(seed)s, 'cart', t.order_id)::text as cart_id,
       case when t.method_x < %(card_share)s then 'card'
            when t.method_x < %(wallet_share)s then 'wallet' else 'voucher' end as method,
       'fp_' || left(md5(%(seed)s::text || ':card:' || t.customer_id::text), 16)
         as card_fingerprint,
       t.paid_at <= %(end)s and t.variant <> 'before_pay' as is_paid,
       t.variant <> 'normal' and t.cancel_at <= %(end)s as is_cancelled,
       t.variant in ('normal', 'delivery_failed') and t.dispatched_at <= %(end)s
         as is_dispatched,
       t.variant = 'normal' and t.delivered_at <= %(end)s as is_delivered
from timeline2 as t
join totals as s using (order_id)
"""

INSERT_ORDERS = """
insert into orders (order_id, store_id, customer_id, status, placed_at, updated_at, total_amount,
                    delivery_notes)
select order_id, store_id, customer_id,
       case when is_cancelled then 'cancelled' when is_delivered then 'delivered'
            when is_paid then 'paid' else 'placed' end,
       placed_at,
       case when is_cancelled then cancel_at when is_delivered then delivered_at
            when is_paid then paid_at else placed_at end,
       total_amount, delivery_notes
from _o order by order_id
"""

INSERT_ITEMS = """
insert into order_items (order_id, line_number, product_id, quantity, unit_price)
select order_id, line_number, product_id, quantity, unit_price from _i
order by order_id, line_number
"""

# k 0: a failed charge attempt; 1: the charge; 2: a refund (full on cancellation after payment
# or failed delivery, the first line's amount as a partial refund of a delivered order).
INSERT_PAYMENTS = """
insert into payments (payment_id, order_id, payment_kind, method, card_fingerprint, amount,
                      status, created_at, updated_at)
select p.order_id * 4 + p.k, p.order_id, p.kind, p.method,
       case when p.method = 'card' then p.card_fingerprint end, p.amount,
       case when p.failed then 'failed'
            when p.settle_at <= %(end)s then 'settled'
            when p.capture_at <= %(end)s then 'captured' else 'authorized' end,
       p.created_at,
       case when p.failed then p.created_at
            when p.settle_at <= %(end)s then p.settle_at
            when p.capture_at <= %(end)s then p.capture_at else p.created_at end
from (
  select order_id, 0 as k, 'charge' as kind, method, card_fingerprint, total_amount as amount,
         true as failed, attempt_at as created_at, null::timestamptz as capture_at,
         null::timestamptz as settle_at
  from _o where has_failed_attempt and attempt_at <= %(end)s
  union all
  select order_id, 1, 'charge', method, card_fingerprint, total_amount, false, paid_at,
         capture_at,
         case when variant = 'normal' then delivered_at else capture_at end + interval '1 day'
  from _o where is_paid
  union all
  select order_id, 2, 'refund', method, card_fingerprint,
         case when variant = 'normal' then first_line_amount else total_amount end, false,
         r.refund_at, r.refund_at, r.refund_at + interval '1 day'
  from _o
  cross join lateral (
    select case when variant = 'normal' then partial_refund_at else cancel_at end as refund_at
  ) as r
  where (variant in ('after_pay', 'delivery_failed') and is_cancelled)
     or (variant = 'normal' and has_partial_refund and partial_refund_at <= %(end)s)
) as p
order by 1
"""

# One delivery per paid order, created at payment; a cancellation before dispatch deletes it.
INSERT_DELIVERIES = """
insert into deliveries (delivery_id, order_id, store_id, courier_id, status, promised_at,
                        dispatched_at, delivered_at, updated_at)
select order_id, order_id, store_id,
       case when is_dispatched then courier_id end,
       case when variant = 'delivery_failed' and is_cancelled then 'failed'
            when is_delivered then 'delivered' when is_dispatched then 'dispatched'
            else 'pending' end,
       promised_at,
       case when is_dispatched then dispatched_at end,
       case when is_delivered then delivered_at end,
       case when variant = 'delivery_failed' and is_cancelled then cancel_at
            when is_delivered then delivered_at when is_dispatched then dispatched_at
            else paid_at end
from _o
where is_paid and not (variant = 'after_pay' and is_cancelled)
order by order_id
"""

# The app's events before each order (the CTE): session_started, one cart_item_added per line,
# then checkout_started, 40 s apart, all of one session and cart.
# Each event is regular, late, duplicated or malformed (exclusive, by the configured shares).
# event_id is time-ordered like the app's UUIDv7 (milliseconds of event_time, then hashed bits),
# so the ids of a day land together in the index instead of all over it.
# Events (and re-emitted copies) that would reach the backend after %(end)s are not there yet.
INSERT_EVENTS = """
with events as (
select o.order_id * 20 as key, 'session_started' as event_type, o.customer_id,
       o.placed_at - ((o.n_lines + 1) * 40 + 15) * interval '1 second' as event_time,
       jsonb_build_object(
         'platform', (%(platforms)s::text[])[
                       1 + floor(3 * pg_temp.rnd(%(seed)s, o.customer_id, 40))::int],
         'app_version', '4.' || floor(10 * pg_temp.rnd(%(seed)s, o.order_id, 41))::int::text
                        || '.' || floor(20 * pg_temp.rnd(%(seed)s, o.order_id, 42))::int::text)
         as payload,
       o.session_id
from _o as o
union all
select i.order_id * 20 + i.line_number, 'cart_item_added', o.customer_id,
       o.placed_at - ((o.n_lines - i.line_number + 1) * 40 + 5
                      + 20 * pg_temp.rnd(%(seed)s, i.order_id * 20 + i.line_number, 43))
                     * interval '1 second',
       jsonb_build_object('cart_id', o.cart_id, 'product_id', i.product_id,
                          'quantity', i.quantity),
       o.session_id
from _i as i join _o as o using (order_id)
union all
select o.order_id * 20 + 9, 'checkout_started', o.customer_id,
       o.placed_at - interval '10 seconds',
       jsonb_build_object('cart_id', o.cart_id, 'item_count', o.units,
                          'cart_value', o.total_amount),
       o.session_id
from _o as o
)
insert into app_events (outbox_id, event_id, event_type, event_time, received_at, customer_id,
                        session_id, payload)
overriding system value
select x.key + case when d.is_copy then 10 else 0 end,
       (lpad(to_hex(floor(extract(epoch from x.event_time) * 1000)::bigint), 12, '0') || '7'
        || substr(x.h, 1, 3) || substr('89ab', 1 + get_byte(decode(x.h, 'hex'), 15) %% 4, 1)
        || substr(x.h, 4, 15))::uuid,
       x.event_type, x.event_time, x.received_at + d.delay, x.customer_id, x.session_id,
       case when x.kind = 'malformed'
            then (x.payload - coalesce(x.fault ->> 'drop', ''))
                 || coalesce(x.fault -> 'set', '{}'::jsonb)
            else x.payload end
from (
  select e.*, k.kind, md5(%(seed)s::text || ':event:' || e.key::text) as h,
         e.event_time
           + case when k.kind = 'late'
                  then %(late_min)s * (%(late_max)s / %(late_min)s)
                       ^ pg_temp.rnd(%(seed)s, e.key, 51)
                  else 0.05 + (%(on_time_max)s - 0.05) * pg_temp.rnd(%(seed)s, e.key, 51)
             end * interval '1 second' as received_at,
         (%(faults)s::jsonb -> e.event_type)
           -> floor(jsonb_array_length(%(faults)s::jsonb -> e.event_type)
                    * pg_temp.rnd(%(seed)s, e.key, 52))::int as fault
  from events as e
  cross join lateral (select pg_temp.rnd(%(seed)s, e.key, 50) as r) as f
  cross join lateral (
    select case when f.r < %(late)s then 'late'
                when f.r < %(late)s + %(dup)s then 'duplicate'
                when f.r < %(late)s + %(dup)s + %(mal)s then 'malformed'
                else 'regular' end as kind) as k
) as x
cross join lateral (
  values (false, interval '0 seconds'),
         (true, (1 + 599 * pg_temp.rnd(%(seed)s, x.key, 53)) * interval '1 second')
) as d (is_copy, delay)
where (not d.is_copy or x.kind = 'duplicate') and x.received_at + d.delay <= %(end)s
order by 1
"""

# Customers who moved during the history (the load's move_customer, spread over the window):
# a share of the customers gets a city drawn again and updated_at at a moment of the window, so
# the customers table changes during the seeded days as it does under the load.
MOVE_CUSTOMERS = """
update customers as c
set city = (%(cities)s::text[])[
      1 + floor(%(n_cities)s * pg_temp.rnd(%(seed)s, c.customer_id, 14))::int],
    updated_at = %(start)s
      + pg_temp.rnd(%(seed)s, c.customer_id, 15) * %(span_s)s * interval '1 second'
where pg_temp.rnd(%(seed)s, c.customer_id, 13) < %(move_share)s
"""
