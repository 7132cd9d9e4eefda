-- Refunds per store per UTC refund day; reconciled with the dbt mart fct_daily_refunds.
-- @keys: store_id, refund_date
select
    o.store_id,
    (r.refunded_at at time zone 'UTC')::date as refund_date,
    count(*) as refund_count,
    sum(r.amount) as refund_amount,
    max(r.amount) as largest_refund
from shop.refunds as r
join shop.orders as o on o.order_id = r.order_id
group by 1, 2
