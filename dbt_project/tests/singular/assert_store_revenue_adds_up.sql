-- Days of fct_daily_store_revenue whose totals differ from the staged orders and refunds of
-- the same days (those the run built, see day_window_filter; read by index, as the mart reads
-- them, see window_orders): every order counted once,
-- net = gross - refunds, nothing lost or doubled. Days whose orders or payments changed since
-- the run started (tidemark_settled_before) are left to the next run: the mart was built from
-- an earlier state than the one this test reads.
-- Without a day window (a plain `dbt test` / `dbt build`: CI, a user) it reads all of history
-- once: payments and refunds grouped per order and hash-joined, linear in history with or
-- without an index on order_id (round 37: the per-order lookups of a window, run for every
-- order ever on a mirror without that index, took over 10 minutes at 10x).
-- sqlfluff:indentation:template_blocks_indent:false
{{ config(meta={'dagster': {'ref': {'name': 'fct_daily_store_revenue'}}}) }}

with

-- The orders of the run's days (a sargable range on placed_at; an index serves it) and, per
-- order, its refunds and payments (by order_id; with a window correlated, so read by index for
-- those orders only, whatever the planner's page costs): what int_orders_enriched holds for
-- those days, without reading every order and payment ever.
window_orders as (
    select * from {{ ref('stg_shop__orders') }}
    where {{ day_window_range('placed_at') }}
),
{%- if has_day_window() %}

order_payments as (
    select
        window_orders.order_id,
        last_payment.updated_at
    from window_orders
    left join lateral (
        select max(payments.updated_at) as updated_at
        from {{ ref('stg_shop__payments') }} as payments
        where payments.order_id = window_orders.order_id
    ) as last_payment on true
),

order_refunds as (
    select
        window_orders.order_id,
        refunds.refund_amount
    from window_orders
    left join lateral (
        select sum(refund_payments.amount) as refund_amount
        from {{ ref('int_refund_payments') }} as refund_payments
        where refund_payments.order_id = window_orders.order_id
    ) as refunds on true
),
{%- else %}

-- All of history: each table read once, grouped per order.
order_payments as (
    select
        payments.order_id,
        max(payments.updated_at) as updated_at
    from {{ ref('stg_shop__payments') }} as payments
    group by payments.order_id
),

order_refunds as (
    select
        refund_payments.order_id,
        sum(refund_payments.amount) as refund_amount
    from {{ ref('int_refund_payments') }} as refund_payments
    group by refund_payments.order_id
),
{%- endif %}

changed as (
    select window_orders.order_date
    from window_orders
    left join order_payments
        on window_orders.order_id = order_payments.order_id
    where
        window_orders.updated_at >= {{ tidemark_settled_before() }}
        or order_payments.updated_at >= {{ tidemark_settled_before() }}
),

mart as (
    select
        order_date,
        sum(order_count) as order_count,
        sum(gross_revenue) as gross_revenue,
        sum(refund_amount) as refund_amount,
        sum(net_revenue) as net_revenue
    from {{ ref('fct_daily_store_revenue') }}
    -- Only the days this run built: other days may have been built before later changes.
    where
        {{ day_window_filter('order_date') }}
        and order_date not in (select changed.order_date from changed)
    group by order_date
),

orders as (
    select
        window_orders.order_date,
        count(*) as order_count,
        coalesce(sum(window_orders.total_amount) filter (
            where not window_orders.is_cancelled
        ), 0) as gross_revenue,
        sum(coalesce(refunds.refund_amount, 0)) as refund_amount
    from window_orders
    left join order_refunds as refunds
        on window_orders.order_id = refunds.order_id
    where window_orders.order_date in (select mart.order_date from mart)
    group by window_orders.order_date
),

final as (
    select
        mart.order_date,
        mart.order_count,
        orders.order_count as staged_order_count,
        mart.gross_revenue,
        orders.gross_revenue as staged_gross_revenue
    from mart
    left join orders
        on mart.order_date = orders.order_date
    where
        orders.order_date is null
        or mart.order_count <> orders.order_count
        or mart.gross_revenue <> orders.gross_revenue
        or mart.refund_amount <> orders.refund_amount
        or mart.net_revenue <> mart.gross_revenue - mart.refund_amount
)

select * from final
