-- App funnel per UTC event day (device time, so late events count on the day they happened),
-- from the outbox deduplicated on event_id: sessions started, carts with an item added, and
-- carts whose checkout started.
with

app_events as (
    select * from {{ ref('int_app_events_deduplicated') }}
    where {{ day_window_range('event_time') }}
),

final as (
    select
        event_date,
        count(distinct session_id) filter (
            where event_type = 'session_started'
        ) as session_count,
        count(distinct cart_id) filter (
            where event_type = 'cart_item_added'
        ) as cart_count,
        count(distinct cart_id) filter (
            where event_type = 'checkout_started'
        ) as checkout_count,
        count(*) as event_count,
        count(*) filter (where is_late) as late_event_count
    from app_events
    group by event_date
)

select * from final
