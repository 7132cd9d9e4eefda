with

source as (
    select * from {{ source('shop', 'products') }}
),

final as (
    select
        product_id,
        product_name,
        category,
        unit_price,
        tags,
        is_active
    from source
)

select * from final
