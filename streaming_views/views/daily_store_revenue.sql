-- Daily revenue per store; reconciled with the dbt mart fct_daily_store_revenue.
-- Definition (the mart must match it exactly):
--   grain:                  store_id, order_date = (orders.placed_at at time zone 'UTC')::date
--   order_count:            orders placed that day (all statuses)
--   cancelled_order_count:  of those, orders with status = 'cancelled'
--   gross_revenue:          sum(total_amount) of the day's orders with status <> 'cancelled'
--   refund_amount:          sum(amount) of payments with payment_kind = 'refund' and
--                           status <> 'failed', attributed to the order's store and order_date
--   net_revenue:            gross_revenue - refund_amount
-- @keys: store_id, order_date
-- @cluster: live_views
-- @freshness: p99 10s
select
    u.store_id,
    u.order_date,
    sum(u.is_order) as order_count,
    sum(u.is_cancelled) as cancelled_order_count,
    sum(u.gross) as gross_revenue,
    sum(u.refund) as refund_amount,
    sum(u.gross) - sum(u.refund) as net_revenue
from (
    select
        o.store_id,
        (o.placed_at at time zone 'UTC')::date as order_date,
        1 as is_order,
        case when o.status = 'cancelled' then 1 else 0 end as is_cancelled,
        case when o.status <> 'cancelled' then o.total_amount else 0 end as gross,
        0::numeric(12, 2) as refund
    from shop.orders as o
    union all
    select
        o.store_id,
        (o.placed_at at time zone 'UTC')::date as order_date,
        0 as is_order,
        0 as is_cancelled,
        0::numeric(12, 2) as gross,
        p.amount as refund
    from shop.payments as p
    join shop.orders as o on o.order_id = p.order_id
    where p.payment_kind = 'refund' and p.status <> 'failed'
) as u
group by u.store_id, u.order_date
