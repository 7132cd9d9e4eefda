"""The statements of the OLTP workload (see :mod:`tidemark.demo.generator`).

Fixed texts with bound values only, so the server prepares each once. Money travels as integer
cents and is divided by 100 in SQL, so totals stay exact.
"""

from __future__ import annotations

BEGIN = "begin"
COMMIT = "commit"

INSERT_EVENT = (
    "insert into app_events (event_id, event_type, event_time, customer_id, session_id, payload)"
    " values (%s, %s, now() - %s * interval '1 second', %s, %s, %s::jsonb)")
# A re-emission: the same event (same event_id and content) stored again by a later transaction.
REEMIT_EVENT = (
    "insert into app_events (event_id, event_type, event_time, customer_id, session_id, payload)"
    " select event_id, event_type, event_time, customer_id, session_id, payload"
    " from app_events where event_id = %s order by outbox_id limit 1")

INSERT_ORDER = (
    "insert into orders (order_id, store_id, customer_id, status, placed_at, updated_at,"
    " total_amount, delivery_notes)"
    " values (%s, %s, %s, 'placed', case when %s::float8 > 0 then (date_trunc('day', now() at"
    " time zone 'UTC') at time zone 'UTC') - %s::float8 * interval '1 second' else now() end,"
    " now(), %s::bigint / 100.0, %s)")
"""``placed_at`` is now, or (a late order, the 4th and 5th parameters > 0) that many seconds
before today's midnight UTC: on yesterday, beyond the allowed lateness once it is past 02:00."""
INSERT_ITEMS = (
    "insert into order_items (order_id, line_number, product_id, quantity, unit_price)"
    " select %s, l, p, q, c / 100.0"
    " from unnest(%s::int[], %s::int[], %s::int[], %s::bigint[]) as t (l, p, q, c)")
SET_ORDER_STATUS = "update orders set status = %s, updated_at = now() where order_id = %s"
SET_ORDER_TOTAL = (
    "update orders set total_amount = %s::bigint / 100.0, updated_at = now() where order_id = %s")
DELETE_LINE = "delete from order_items where order_id = %s and line_number = %s"

INSERT_PAYMENT = (
    "insert into payments (payment_id, order_id, payment_kind, method, card_fingerprint, amount,"
    " status, created_at, updated_at)"
    " values (%s, %s, %s, %s, %s, %s::bigint / 100.0, %s, now(), now())")
SET_PAYMENT_STATUS = "update payments set status = %s, updated_at = now() where payment_id = %s"

INSERT_DELIVERY = (
    "insert into deliveries (delivery_id, order_id, store_id, status, promised_at, updated_at)"
    " select %s, order_id, store_id, 'pending', placed_at + %s * interval '1 second', now()"
    " from orders where order_id = %s")
DISPATCH = (
    "update deliveries set status = 'dispatched', courier_id = %s, dispatched_at = now(),"
    " updated_at = now() where delivery_id = %s")
DELIVERED = (
    "update deliveries set status = 'delivered', delivered_at = now(), updated_at = now()"
    " where delivery_id = %s")
DELIVERY_FAILED = (
    "update deliveries set status = 'failed', updated_at = now() where delivery_id = %s")
DELETE_DELIVERY = "delete from deliveries where delivery_id = %s"

MOVE_CUSTOMER = "update customers set city = %s, updated_at = now() where customer_id = %s"
