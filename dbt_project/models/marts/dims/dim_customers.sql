with

customers as (
    select * from {{ ref('stg_shop__customers') }}
),

orders as (
    select * from {{ ref('int_orders_enriched') }}
),

customer_orders as (
    select
        customer_id,
        min(placed_at) as first_order_at,
        max(placed_at) as last_order_at,
        count(*) as order_count,
        coalesce(sum(total_amount) filter (where not is_cancelled), 0) as lifetime_gross_revenue
    from orders
    group by customer_id
),

final as (
    select
        customers.customer_id,
        customers.customer_name,
        customers.email,
        customers.city,
        customers.signed_up_at,
        customers.signed_up_date,
        customers.updated_at,
        customer_orders.first_order_at,
        customer_orders.last_order_at,
        coalesce(customer_orders.order_count, 0) as order_count,
        coalesce(customer_orders.lifetime_gross_revenue, 0)::numeric(18, 2)
            as lifetime_gross_revenue
    from customers
    left join customer_orders
        on customers.customer_id = customer_orders.customer_id
)

select * from final
