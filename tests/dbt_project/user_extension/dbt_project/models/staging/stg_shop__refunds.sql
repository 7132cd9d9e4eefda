with

source as (
    select * from {{ source('shop', 'refunds') }}
),

final as (
    select
        refund_id,
        order_id,
        amount,
        reason,
        refunded_at,
        (refunded_at at time zone 'UTC')::date as refund_date
    from source
)

select * from final
