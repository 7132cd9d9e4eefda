-- One select, no CTE: PostgreSQL inlines (pulls up) a view only when it has no WITH, and only
-- an inlined view lets a join reach an index of shop.payments (a one-day build of
-- fct_daily_store_revenue looks up the refunds of its day's orders by order_id).
select
    payment_id,
    order_id,
    payment_kind,
    method,
    card_fingerprint,
    amount,
    status,
    created_at,
    updated_at,
    (created_at at time zone 'UTC')::date as payment_date,
    payment_kind = 'refund' as is_refund,
    status = 'failed' as is_failed
from {{ source('shop', 'payments') }}
