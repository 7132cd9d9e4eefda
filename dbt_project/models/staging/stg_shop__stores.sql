with

source as (
    select * from {{ source('shop', 'stores') }}
),

final as (
    select
        store_id,
        store_name,
        city,
        region,
        opened_at,
        is_active
    from source
)

select * from final
