-- Delivery SLA per store and UTC promised day; delivered_count and late_count match the live
-- view late_deliveries_daily. on_time_share = on time / delivered; p50 / p90 of the delay in
-- minutes (continuous percentiles, negative when early) of delivered deliveries.
with

deliveries as (
    select * from {{ ref('int_deliveries_timed') }}
    where {{ day_window_range('promised_at') }}
),

daily as (
    select
        promised_date,
        store_id,
        count(*) as delivery_count,
        count(*) filter (where is_delivered) as delivered_count,
        count(*) filter (where is_on_time) as on_time_count,
        count(*) filter (where is_delivered and not is_on_time) as late_count,
        percentile_cont(0.5) within group (order by delay_minutes) as p50_delay_minutes,
        percentile_cont(0.9) within group (order by delay_minutes) as p90_delay_minutes,
        max(delivered_at - promised_at) as worst_delay
    from deliveries
    group by promised_date, store_id
),

final as (
    select
        promised_date,
        store_id,
        delivery_count,
        delivered_count,
        on_time_count,
        late_count,
        p50_delay_minutes,
        p90_delay_minutes,
        worst_delay,
        on_time_count::double precision / nullif(delivered_count, 0) as on_time_share
    from daily
)

select * from final
