-- Late deliveries per store per UTC day of the promise (promised_at). A delivery is late when
-- it was delivered after promised_at. Deliveries not yet delivered are counted in
-- delivery_count but not judged (that would need now()).
-- @keys: store_id, promised_date
-- @cluster: live_views
-- @retention: d.promised_at 7 days
select
    d.store_id,
    (d.promised_at at time zone 'UTC')::date as promised_date,
    count(*) as delivery_count,
    count(*) filter (where d.delivered_at is not null) as delivered_count,
    count(*) filter (where d.delivered_at > d.promised_at) as late_count,
    max(d.delivered_at - d.promised_at) as worst_delay
from shop.deliveries as d
group by 1, 2
