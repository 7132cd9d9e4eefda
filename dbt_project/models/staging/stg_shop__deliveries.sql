with

source as (
    select * from {{ source('shop', 'deliveries') }}
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
        updated_at,
        -- The SLA day of a delivery is the UTC date it was promised for.
        (promised_at at time zone 'UTC')::date as promised_date
    from source
)

select * from final
