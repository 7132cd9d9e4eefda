-- Orders with their refunds: refunds count on the order's own order_date, whenever they happen.
with

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

order_refunds as (
    select * from {{ ref('int_order_refunds_aggregated') }}
),

final as (
    select
        orders.order_id,
        orders.store_id,
        orders.customer_id,
        orders.status,
        orders.placed_at,
        orders.updated_at,
        orders.order_date,
        orders.total_amount,
        orders.is_cancelled,
        coalesce(order_refunds.refund_count, 0) as refund_count,
        coalesce(order_refunds.refund_amount, 0) as refund_amount
    from orders
    left join order_refunds
        on orders.order_id = order_refunds.order_id
)

select * from final
