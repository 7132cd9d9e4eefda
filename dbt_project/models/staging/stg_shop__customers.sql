with

source as (
    select * from {{ source('shop', 'customers') }}
),

final as (
    select
        customer_id,
        customer_name,
        email,
        city,
        signed_up_at,
        updated_at,
        (signed_up_at at time zone 'UTC')::date as signed_up_date
    from source
)

select * from final
