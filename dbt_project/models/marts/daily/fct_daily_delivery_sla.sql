-- Delivery SLA per store and UTC promised day: on-time share of delivered deliveries and the
-- median and 90th percentile of the delay in minutes (negative when early).
with

deliveries as (
    select * from {{ ref('int_deliveries_timed') }}
    where {{ day_window_filter('promised_date') }}
),

daily as (
    select
        promised_date,
        store_id,
        count(*) as deliveries,
        count(*) filter (where is_delivered) as delivered_deliveries,
        count(*) filter (where is_on_time) as on_time_deliveries,
        percentile_cont(0.5) within group (order by delay_minutes) as p50_delay_minutes,
        percentile_cont(0.9) within group (order by delay_minutes) as p90_delay_minutes
    from deliveries
    group by promised_date, store_id
),

final as (
    select
        promised_date,
        store_id,
        deliveries,
        delivered_deliveries,
        on_time_deliveries,
        on_time_deliveries::double precision / nullif(delivered_deliveries, 0) as on_time_share,
        p50_delay_minutes,
        p90_delay_minutes
    from daily
)

select * from final
