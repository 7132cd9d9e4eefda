-- Fraud signal: card charges per card fingerprint in tumbling five-minute windows on
-- created_at. Many charges, many distinct orders or many failures on one card in one window is
-- suspicious; read the recent windows:
--   select * from live.card_payments_recent
--   where window_start >= now() - interval '15 minutes' order by payment_count desc;
-- @keys: card_fingerprint, window_start
-- @cluster: live_views
-- @retention: p.created_at 1 hour
select
    p.card_fingerprint,
    date_bin('5 minutes', p.created_at, timestamptz '2000-01-01 00:00:00+00') as window_start,
    count(*) as payment_count,
    count(distinct p.order_id) as order_count,
    count(*) filter (where p.status = 'failed') as failed_count,
    sum(p.amount) as amount
from shop.payments as p
where p.method = 'card' and p.payment_kind = 'charge' and p.card_fingerprint is not null
group by 1, 2
