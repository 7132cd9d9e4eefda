-- Revenue and order count per store per minute: tumbling one-minute windows on placed_at
-- (date_bin, windows aligned to 2000-01-01 00:00 UTC). Cancelled orders are left out.
-- @keys: store_id, window_start
-- @cluster: live_views
-- @retention: o.placed_at 1 day
select
    o.store_id,
    date_bin('1 minute', o.placed_at, timestamptz '2000-01-01 00:00:00+00') as window_start,
    count(*) as order_count,
    sum(o.total_amount) as revenue
from shop.orders as o
where o.status <> 'cancelled'
group by 1, 2
