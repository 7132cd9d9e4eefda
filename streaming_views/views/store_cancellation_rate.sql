-- Cancellation rate per store per UTC day. "Today's" rate is the row of today:
--   select * from live.store_cancellation_rate
--   where order_date = (now() at time zone 'UTC')::date;
-- now() is non-deterministic and cannot be inside a maintained view; the view keeps the orders
-- of the last two days (the @retention temporal filter, on both engines).
-- cancellation_rate = cancelled orders / orders placed that day, rounded to 4 decimals.
-- @keys: store_id, order_date
-- @cluster: live_views
-- @retention: o.placed_at 2 days
select
    o.store_id,
    (o.placed_at at time zone 'UTC')::date as order_date,
    count(*) as order_count,
    count(*) filter (where o.status = 'cancelled') as cancelled_count,
    round(count(*) filter (where o.status = 'cancelled')::numeric / count(*), 4)
        as cancellation_rate
from shop.orders as o
group by 1, 2
