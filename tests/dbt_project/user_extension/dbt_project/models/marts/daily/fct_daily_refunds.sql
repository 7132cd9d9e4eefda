-- Refunds per store and UTC refund day (refund_date = refunded_at in UTC); the twin of the live
-- view store_refunds_daily.
with

refunds as (
    select * from {{ ref('stg_shop__refunds') }}
    where {{ day_window_filter('refund_date') }}
),

orders as (
    select * from {{ ref('stg_shop__orders') }}
),

final as (
    select
        refunds.refund_date,
        orders.store_id,
        count(*) as refund_count,
        sum(refunds.amount)::numeric(18, 2) as refund_amount
    from refunds
    inner join orders on refunds.order_id = orders.order_id
    group by refunds.refund_date, orders.store_id
)

select * from final
