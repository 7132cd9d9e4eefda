-- Revenue per store and UTC order day; the twin of the live view daily_store_revenue, with the
-- same definition and column names (reconciliation.yml). order_count counts every order placed
-- that day, cancelled ones included; gross_revenue only orders not cancelled; refunds (not
-- failed) land on their order's own day, whenever they happen.
-- A one-day build (a partition, a late-data correction) reads only its day: the orders by a
-- sargable range on placed_at (an index serves it), the refunds of those orders only.
with

orders as (
    select * from {{ ref('stg_shop__orders') }}
    where {{ day_window_range('placed_at') }}
),

window_refunds as (
    select * from {{ ref('int_refund_payments') }}
    where {{ day_window_keys('order_id', 'select orders.order_id from orders') }}
),

order_refunds as (
    select
        order_id,
        sum(amount) as refund_amount
    from window_refunds
    group by order_id
),

orders_with_refunds as (
    select
        orders.order_date,
        orders.store_id,
        orders.total_amount,
        orders.is_cancelled,
        coalesce(order_refunds.refund_amount, 0) as refund_amount
    from orders
    left join order_refunds
        on orders.order_id = order_refunds.order_id
),

daily as (
    select
        order_date,
        store_id,
        count(*) as order_count,
        count(*) filter (where is_cancelled) as cancelled_order_count,
        coalesce(sum(total_amount) filter (where not is_cancelled), 0)::numeric(18, 2)
            as gross_revenue,
        coalesce(sum(refund_amount), 0)::numeric(18, 2) as refund_amount
    from orders_with_refunds
    group by order_date, store_id
),

final as (
    select
        order_date,
        store_id,
        order_count,
        cancelled_order_count,
        gross_revenue,
        refund_amount,
        (gross_revenue - refund_amount)::numeric(18, 2) as net_revenue,
        round(cancelled_order_count::numeric / order_count, 4)::numeric(5, 4)
            as cancellation_rate
    from daily
)

select * from final
