-- Rows of fct_daily_delivery_sla whose counts contradict each other: delivered deliveries are
-- either on time or late, never more than were promised, and the percentiles are ordered.
with

sla as (
    select * from {{ ref('fct_daily_delivery_sla') }}
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
        p90_delay_minutes
    from sla
    where
        on_time_count + late_count <> delivered_count
        or delivered_count > delivery_count
        or p50_delay_minutes > p90_delay_minutes
)

select * from final
