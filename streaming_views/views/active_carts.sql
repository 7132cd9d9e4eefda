-- Active carts from the app's outbox events (shop.app_events): carts with at least one
-- cart_item_added event and no checkout_started event yet. The outbox may deliver an event
-- twice (same event_id), so the view uses only aggregates a duplicate cannot change:
-- count(DISTINCT event_id), count(DISTINCT product), min, max, bool_or.
-- @keys: cart_id
-- @cluster: live_views
-- @retention: e.event_time 1 day
select
    e.payload ->> 'cart_id' as cart_id,
    min(e.customer_id) as customer_id,
    count(distinct e.event_id) filter (where e.event_type = 'cart_item_added') as items_added,
    count(distinct e.payload ->> 'product_id') filter (where e.event_type = 'cart_item_added')
        as distinct_products,
    min(e.event_time) as first_event_at,
    max(e.event_time) as last_event_at
from shop.app_events as e
where e.event_type in ('cart_item_added', 'checkout_started')
    and e.payload ? 'cart_id'
group by 1
having not bool_or(e.event_type = 'checkout_started')
