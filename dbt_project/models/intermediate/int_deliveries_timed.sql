-- Deliveries with their delay against the promise (as the live view late_deliveries_daily):
-- delivered means delivered_at is set; on time means delivered at or before promised_at, late
-- after it. delay_minutes = delivered_at - promised_at in minutes (negative when early, null
-- when not delivered).
with

deliveries as (
    select * from {{ ref('stg_shop__deliveries') }}
),

final as (
    select
        delivery_id,
        order_id,
        store_id,
        courier_id,
        status,
        promised_at,
        dispatched_at,
        delivered_at,
        promised_date,
        delivered_at is not null as is_delivered,
        coalesce(delivered_at <= promised_at, false) as is_on_time,
        extract(epoch from delivered_at - promised_at)::double precision / 60
            as delay_minutes
    from deliveries
)

select * from final
