-- Orders and revenue per store over the last five minutes: a sliding window. An order counts
-- from its placed_at until five minutes later, then expires. On the embedded engine the clock
-- is ticked every second by 'tidemark up' (or 'tidemark views tick'); on Materialize mz_now()
-- moves by itself. The view holds one row per store with an order in the window: it stays
-- bounded however long the stack runs.
-- @keys: store_id
-- @cluster: live_views
select
    o.store_id,
    count(*) as order_count,
    sum(o.total_amount) as revenue,
    max(o.placed_at) as last_order_at
from shop.orders as o
where o.status <> 'cancelled'
    and mz_now() >= o.placed_at
    and mz_now() < o.placed_at + interval '5 minutes'
group by o.store_id
