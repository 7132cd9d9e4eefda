with

source as (
    select * from {{ source('shop', 'orders') }}
),

final as (
    select
        order_id,
        store_id,
        customer_id,
        status,
        placed_at,
        updated_at,
        total_amount,
        delivery_notes,
        -- The business day of an order is the UTC date it was placed (as the live view).
        (placed_at at time zone 'UTC')::date as order_date,
        status = 'cancelled' as is_cancelled
    from source
)

select * from final
