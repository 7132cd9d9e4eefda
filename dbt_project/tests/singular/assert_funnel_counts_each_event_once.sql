-- Days of fct_daily_funnel whose event_count is not the number of distinct event_ids of that
-- device day in the outbox: a duplicate counted twice or an event lost. Days that received
-- events since the run started (tidemark_settled_before) are left to the next run.
-- A one-day run reads the outbox of its days only (day_window_range: an index on event_time
-- serves it), not every event ever: it runs with every partition run and correction.
{{ config(meta={'dagster': {'ref': {'name': 'fct_daily_funnel'}}}) }}

with

changed as (
    select distinct event_date
    from {{ ref('stg_shop__app_events') }}
    where
        {{ day_window_range('event_time') }}
        and received_at >= {{ tidemark_settled_before() }}
),

funnel as (
    select * from {{ ref('fct_daily_funnel') }}
    -- Only the days this run built: other days may have been built before later events.
    where
        {{ day_window_filter('event_date') }}
        and event_date not in (select changed.event_date from changed)
),

outbox as (
    select
        event_date,
        count(distinct event_id) as distinct_events
    from {{ ref('stg_shop__app_events') }}
    where
        {{ day_window_range('event_time') }}
        and event_date in (select funnel.event_date from funnel)
    group by event_date
),

final as (
    select
        funnel.event_date,
        funnel.event_count,
        outbox.distinct_events
    from funnel
    left join outbox
        on funnel.event_date = outbox.event_date
    where outbox.distinct_events is distinct from funnel.event_count
)

select * from final
