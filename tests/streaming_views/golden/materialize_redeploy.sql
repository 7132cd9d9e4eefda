-- phase: upstream
ALTER TABLE "public"."app_events" REPLICA IDENTITY FULL;
ALTER TABLE "public"."deliveries" REPLICA IDENTITY FULL;
ALTER TABLE "public"."orders" REPLICA IDENTITY FULL;
ALTER TABLE "public"."payments" REPLICA IDENTITY FULL;
DROP PUBLICATION IF EXISTS "tidemark_mz_shop";
CREATE PUBLICATION "tidemark_mz_shop" FOR TABLE "public"."app_events", "public"."deliveries", "public"."orders", "public"."payments";
-- phase: setup
CREATE SECRET IF NOT EXISTS "shop_pgpass" AS <secret from $TIDEMARK_MZ_SOURCE_PASSWORD>;
CREATE CONNECTION IF NOT EXISTS "shop_pg" TO POSTGRES (HOST 'source.example', PORT 5432, USER 'materialize', PASSWORD SECRET "shop_pgpass", DATABASE 'shop');
CREATE SOURCE IF NOT EXISTS "shop_source" IN CLUSTER "quickstart" FROM POSTGRES CONNECTION "shop_pg" (PUBLICATION 'tidemark_mz_shop');
CREATE SCHEMA IF NOT EXISTS "shop";
CREATE TABLE IF NOT EXISTS "shop"."app_events" FROM SOURCE "shop_source" (REFERENCE "public"."app_events");
CREATE TABLE IF NOT EXISTS "shop"."deliveries" FROM SOURCE "shop_source" (REFERENCE "public"."deliveries");
CREATE TABLE IF NOT EXISTS "shop"."orders" FROM SOURCE "shop_source" (REFERENCE "public"."orders");
CREATE TABLE IF NOT EXISTS "shop"."payments" FROM SOURCE "shop_source" (REFERENCE "public"."payments");
CREATE SCHEMA IF NOT EXISTS tidemark;
CREATE TABLE IF NOT EXISTS tidemark.views (name text NOT NULL, target text NOT NULL, definition_hash text NOT NULL, definition text NOT NULL, deployed_at timestamptz NOT NULL);
-- views: active_carts unchanged, card_payments_recent unchanged, daily_store_revenue unchanged, late_deliveries_daily unchanged, store_cancellation_rate unchanged, store_orders_last_5_minutes unchanged, store_revenue_per_minute replaced
-- phase: init (swapped clusters: live_views)
CREATE SCHEMA IF NOT EXISTS "live";
DROP SCHEMA IF EXISTS "live_dbt_deploy" CASCADE;
CREATE SCHEMA "live_dbt_deploy";
DROP CLUSTER IF EXISTS "live_views_dbt_deploy" CASCADE;
CREATE CLUSTER "live_views_dbt_deploy" (SIZE = '50cc', REPLICATION FACTOR = 2);
-- phase: build
CREATE MATERIALIZED VIEW "live_dbt_deploy"."active_carts" IN CLUSTER "live_views_dbt_deploy" AS SELECT e.payload ->> 'cart_id' AS cart_id, MIN(e.customer_id) AS customer_id, COUNT(DISTINCT e.event_id) FILTER(WHERE e.event_type = 'cart_item_added') AS items_added, COUNT(DISTINCT e.payload ->> 'product_id') FILTER(WHERE e.event_type = 'cart_item_added') AS distinct_products, MIN(e.event_time) AS first_event_at, MAX(e.event_time) AS last_event_at FROM shop.app_events AS e WHERE (e.event_type IN ('cart_item_added', 'checkout_started') AND e.payload ? 'cart_id') AND MZ_NOW() <= e.event_time + INTERVAL '1 DAYS' GROUP BY 1 HAVING NOT BOOL_OR(e.event_type = 'checkout_started');
CREATE INDEX "active_carts_keys_idx" IN CLUSTER "live_views_dbt_deploy" ON "live_dbt_deploy"."active_carts" ("cart_id");
CREATE MATERIALIZED VIEW "live_dbt_deploy"."card_payments_recent" IN CLUSTER "live_views_dbt_deploy" AS SELECT p.card_fingerprint, DATE_BIN('5 minutes', p.created_at, CAST('2000-01-01 00:00:00+00' AS TIMESTAMPTZ)) AS window_start, COUNT(*) AS payment_count, COUNT(DISTINCT p.order_id) AS order_count, COUNT(*) FILTER(WHERE p.status = 'failed') AS failed_count, SUM(p.amount) AS amount FROM shop.payments AS p WHERE (p.method = 'card' AND p.payment_kind = 'charge' AND NOT p.card_fingerprint IS NULL) AND MZ_NOW() <= p.created_at + INTERVAL '1 HOURS' GROUP BY 1, 2;
CREATE INDEX "card_payments_recent_keys_idx" IN CLUSTER "live_views_dbt_deploy" ON "live_dbt_deploy"."card_payments_recent" ("card_fingerprint", "window_start");
CREATE MATERIALIZED VIEW "live_dbt_deploy"."daily_store_revenue" IN CLUSTER "live_views_dbt_deploy" AS SELECT u.store_id, u.order_date, SUM(u.is_order) AS order_count, SUM(u.is_cancelled) AS cancelled_order_count, SUM(u.gross) AS gross_revenue, SUM(u.refund) AS refund_amount, SUM(u.gross) - SUM(u.refund) AS net_revenue FROM (SELECT o.store_id, CAST((o.placed_at AT TIME ZONE 'UTC') AS DATE) AS order_date, 1 AS is_order, CASE WHEN o.status = 'cancelled' THEN 1 ELSE 0 END AS is_cancelled, CASE WHEN o.status <> 'cancelled' THEN o.total_amount ELSE 0 END AS gross, CAST(0 AS DECIMAL(12, 2)) AS refund FROM shop.orders AS o UNION ALL SELECT o.store_id, CAST((o.placed_at AT TIME ZONE 'UTC') AS DATE) AS order_date, 0 AS is_order, 0 AS is_cancelled, CAST(0 AS DECIMAL(12, 2)) AS gross, p.amount AS refund FROM shop.payments AS p JOIN shop.orders AS o ON o.order_id = p.order_id WHERE p.payment_kind = 'refund' AND p.status <> 'failed') AS u GROUP BY u.store_id, u.order_date;
CREATE INDEX "daily_store_revenue_keys_idx" IN CLUSTER "live_views_dbt_deploy" ON "live_dbt_deploy"."daily_store_revenue" ("store_id", "order_date");
CREATE MATERIALIZED VIEW "live_dbt_deploy"."late_deliveries_daily" IN CLUSTER "live_views_dbt_deploy" AS SELECT d.store_id, CAST((d.promised_at AT TIME ZONE 'UTC') AS DATE) AS promised_date, COUNT(*) AS delivery_count, COUNT(*) FILTER(WHERE NOT d.delivered_at IS NULL) AS delivered_count, COUNT(*) FILTER(WHERE d.delivered_at > d.promised_at) AS late_count, MAX(d.delivered_at - d.promised_at) AS worst_delay FROM shop.deliveries AS d WHERE MZ_NOW() <= d.promised_at + INTERVAL '7 DAYS' GROUP BY 1, 2;
CREATE INDEX "late_deliveries_daily_keys_idx" IN CLUSTER "live_views_dbt_deploy" ON "live_dbt_deploy"."late_deliveries_daily" ("store_id", "promised_date");
CREATE MATERIALIZED VIEW "live_dbt_deploy"."store_cancellation_rate" IN CLUSTER "live_views_dbt_deploy" AS SELECT o.store_id, CAST((o.placed_at AT TIME ZONE 'UTC') AS DATE) AS order_date, COUNT(*) AS order_count, COUNT(*) FILTER(WHERE o.status = 'cancelled') AS cancelled_count, ROUND(CAST(COUNT(*) FILTER(WHERE o.status = 'cancelled') AS DECIMAL) / COUNT(*), 4) AS cancellation_rate FROM shop.orders AS o WHERE MZ_NOW() <= o.placed_at + INTERVAL '2 DAYS' GROUP BY 1, 2;
CREATE INDEX "store_cancellation_rate_keys_idx" IN CLUSTER "live_views_dbt_deploy" ON "live_dbt_deploy"."store_cancellation_rate" ("store_id", "order_date");
CREATE MATERIALIZED VIEW "live_dbt_deploy"."store_orders_last_5_minutes" IN CLUSTER "live_views_dbt_deploy" AS SELECT o.store_id, COUNT(*) AS order_count, SUM(o.total_amount) AS revenue, MAX(o.placed_at) AS last_order_at FROM shop.orders AS o WHERE o.status <> 'cancelled' AND MZ_NOW() >= o.placed_at AND MZ_NOW() < o.placed_at + INTERVAL '5 MINUTES' GROUP BY o.store_id;
CREATE INDEX "store_orders_last_5_minutes_keys_idx" IN CLUSTER "live_views_dbt_deploy" ON "live_dbt_deploy"."store_orders_last_5_minutes" ("store_id");
CREATE MATERIALIZED VIEW "live_dbt_deploy"."store_revenue_per_minute" IN CLUSTER "live_views_dbt_deploy" AS SELECT o.store_id, DATE_BIN('1 minute', o.placed_at, CAST('2000-01-01 00:00:00+00' AS TIMESTAMPTZ)) AS window_start, COUNT(*) AS order_count, SUM(o.total_amount) AS revenue FROM shop.orders AS o WHERE o.status <> 'cancelled' AND MZ_NOW() <= o.placed_at + INTERVAL '1 DAYS' GROUP BY 1, 2;
CREATE INDEX "store_revenue_per_minute_keys_idx" IN CLUSTER "live_views_dbt_deploy" ON "live_dbt_deploy"."store_revenue_per_minute" ("store_id", "window_start");
-- phase: await (every object hydrated, lag <= 1s; polled with:)
-- with views as (
--   select mv.id from mz_catalog.mz_materialized_views mv
--   join mz_catalog.mz_schemas s on s.id = mv.schema_id
--   join mz_catalog.mz_databases d on d.id = s.database_id
--   where s.name = 'live_dbt_deploy' and d.name = current_database()
-- ), objects as (
--   select id from views
--   union all select i.id from mz_catalog.mz_indexes i where i.on_id in (select id from views)
-- ), hydration as (
--   select o.id, coalesce(bool_or(h.hydrated), false) as hydrated
--   from objects o left join mz_internal.mz_hydration_statuses h on h.object_id = o.id
--   group by o.id
-- )
-- select count(*) as total,
--        count(*) filter (where h.hydrated) as hydrated,
--        coalesce(max(extract(epoch from l.lag)), 0)::float8 as max_lag_s
-- from hydration h left join mz_internal.mz_wallclock_global_lag l on l.object_id = h.id
-- phase: promote
BEGIN;
ALTER SCHEMA "live" SWAP WITH "live_dbt_deploy";
ALTER CLUSTER "live_views" SWAP WITH "live_views_dbt_deploy";
COMMIT;
-- phase: cleanup
DROP SCHEMA "live_dbt_deploy" CASCADE;
DROP CLUSTER "live_views_dbt_deploy" CASCADE;
-- phase: catalog (one row per view: active_carts 830a90098016e67d, card_payments_recent 8efe2534d123ea44, daily_store_revenue c4ba47b5648e8ad9, late_deliveries_daily cf645aaaa01b78e0, store_cancellation_rate 963ad6b20f4b421e, store_orders_last_5_minutes 85d2f7e789b99961, store_revenue_per_minute 7e83fc656e1555bb)
DELETE FROM tidemark.views WHERE target = 'materialize';
INSERT INTO tidemark.views VALUES (%s, 'materialize', %s, %s, now());
