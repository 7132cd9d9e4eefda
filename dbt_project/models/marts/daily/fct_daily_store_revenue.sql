-- Revenue per store and UTC order day; the twin of the live view daily_store_revenue
-- (reconciliation.yml). orders counts every order placed that day, cancelled ones included;
-- gross counts only orders not cancelled; refunds land on the order's own day.
with

orders as (
    select * from {{ ref('int_orders_enriched') }}
    where {{ day_window_filter('order_date') }}
),

daily as (
    select
        order_date,
        store_id,
        count(*) as orders,
        count(*) filter (where is_cancelled) as cancelled_orders,
        coalesce(sum(total_amount) filter (where not is_cancelled), 0)::numeric(18, 2)
            as gross_revenue,
        coalesce(sum(refund_amount), 0)::numeric(18, 2) as refunds
    from orders
    group by order_date, store_id
),

final as (
    select
        order_date,
        store_id,
        orders,
        cancelled_orders,
        gross_revenue,
        refunds,
        (gross_revenue - refunds)::numeric(18, 2) as net_revenue
    from daily
)

select * from final
