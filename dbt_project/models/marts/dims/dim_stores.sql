with

stores as (
    select * from {{ ref('stg_shop__stores') }}
),

final as (
    select
        store_id,
        store_name,
        city,
        region,
        opened_at,
        is_active
    from stores
)

select * from final
