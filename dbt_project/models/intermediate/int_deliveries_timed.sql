-- Deliveries with their delay against the promise. Delay is in minutes, negative when early,
-- and known only for delivered deliveries; on time means delivered at or before the promise.
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
        status = 'delivered' and delivered_at is not null as is_delivered,
        status = 'delivered' and delivered_at <= promised_at as is_on_time,
        case
            when status = 'delivered' and delivered_at is not null
                then extract(epoch from delivered_at - promised_at) / 60.0
        end as delay_minutes
    from deliveries
)

select * from final
