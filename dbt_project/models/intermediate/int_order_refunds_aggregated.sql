-- Refunds per order: refund payments that did not fail (int_refund_payments), summed.
with

refunds as (
    select * from {{ ref('int_refund_payments') }}
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
