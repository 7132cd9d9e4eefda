with

source as (
    select * from {{ source('shop', 'order_items') }}
),

final as (
    select
        order_id,
        line_number,
        product_id,
        quantity,
        unit_price,
        quantity * unit_price as line_amount
    from source
)

select * from final
