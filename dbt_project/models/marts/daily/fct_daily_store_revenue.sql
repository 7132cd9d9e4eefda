-- Revenue per store and UTC order day; the twin of the live view daily_store_revenue, with the
-- same definition and column names (reconciliation.yml). order_count counts every order placed
-- that day, cancelled ones included; gross_revenue only orders not cancelled; refunds (not
-- failed) land on their order's own day, whenever they happen.
with

orders as (
    select * from {{ ref('int_orders_enriched') }}
    where {{ day_window_filter('order_date') }}
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
    from orders
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
