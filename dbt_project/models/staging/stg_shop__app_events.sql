with

source as (
    select * from {{ source('shop', 'app_events') }}
),

final as (
    select
        outbox_id,
        event_id,
        event_type,
        event_time,
        received_at,
        customer_id,
        session_id,
        payload,
        -- Device time decides the day (late events land on the day they happened).
        (event_time at time zone 'UTC')::date as event_date,
        payload ->> 'cart_id' as cart_id,
        {{ json_number('payload', 'product_id', 'integer') }} as product_id,
        {{ json_number('payload', 'quantity', 'integer') }} as quantity,
        {{ json_number('payload', 'item_count', 'integer') }} as item_count,
        {{ json_number('payload', 'cart_value', 'numeric(12, 2)') }} as cart_value,
        payload ->> 'platform' as platform,
        payload ->> 'app_version' as app_version
    from source
)

select * from final
