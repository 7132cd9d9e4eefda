-- Refunds per order: refund payments that did not fail (authorized, captured or settled).
with

payments as (
    select * from {{ ref('stg_shop__payments') }}
),

refunds as (
    select
        order_id,
        amount
    from payments
    where is_refund and not is_failed
),

final as (
    select
        order_id,
        count(*) as refund_count,
        sum(amount) as refund_amount
    from refunds
    group by order_id
)

select * from final
