-- Payments per UTC creation day, method, kind (charge / refund) and current status: captured
-- against settled money is the captured and settled rows of a day.
with

payments as (
    select * from {{ ref('stg_shop__payments') }}
    where {{ day_window_range('created_at') }}
),

final as (
    select
        payment_date,
        method,
        payment_kind,
        status,
        count(*) as payment_count,
        sum(amount)::numeric(18, 2) as amount
    from payments
    group by payment_date, method, payment_kind, status
)

select * from final
