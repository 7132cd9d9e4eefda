with

source as (
    select * from {{ source('shop', 'payments') }}
),

final as (
    select
        payment_id,
        order_id,
        payment_kind,
        method,
        card_fingerprint,
        amount,
        status,
        created_at,
        updated_at,
        (created_at at time zone 'UTC')::date as payment_date,
        payment_kind = 'refund' as is_refund,
        status = 'failed' as is_failed
    from source
)

select * from final
