-- The refunds that count: refund payments that did not fail (authorized, captured or settled),
-- one row per payment. A daily mart restricts them to its window's orders (by order_id) before
-- aggregating, so a one-day build reads only that day's refunds. One select, no CTE (as
-- stg_shop__payments): the view is inlined, so that restriction can use an index on
-- shop.payments (order_id) when landing has one.
select
    payment_id,
    order_id,
    amount,
    created_at
from {{ ref('stg_shop__payments') }}
where is_refund and not is_failed
