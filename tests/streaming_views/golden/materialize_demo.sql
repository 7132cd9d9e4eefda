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
-- phase: build
DROP SCHEMA IF EXISTS "live_deploy" CASCADE;
CREATE SCHEMA "live_deploy";
CREATE MATERIALIZED VIEW "live_deploy"."active_carts" IN CLUSTER "live_views" AS SELECT e.payload ->> 'cart_id' AS cart_id, min(e.customer_id) AS customer_id, count(DISTINCT e.event_id) FILTER (WHERE e.event_type = 'cart_item_added') AS items_added, count(DISTINCT e.payload ->> 'product_id') FILTER (WHERE e.event_type = 'cart_item_added') AS distinct_products, min(e.event_time) AS first_event_at, max(e.event_time) AS last_event_at FROM shop.app_events AS e WHERE (e.event_type IN ('cart_item_added', 'checkout_started') AND e.payload ? 'cart_id') AND mz_now() <= e.event_time + CAST('1 days' AS interval) GROUP BY 1 HAVING NOT bool_or(e.event_type = 'checkout_started');
CREATE INDEX "active_carts_keys_idx" IN CLUSTER "live_views" ON "live_deploy"."active_carts" ("cart_id");
CREATE MATERIALIZED VIEW "live_deploy"."card_payments_recent" IN CLUSTER "live_views" AS SELECT p.card_fingerprint, date_bin('5 minutes', p.created_at, CAST('2000-01-01 00:00:00+00' AS timestamptz)) AS window_start, count(*) AS payment_count, count(DISTINCT p.order_id) AS order_count, count(*) FILTER (WHERE p.status = 'failed') AS failed_count, sum(p.amount) AS amount FROM shop.payments AS p WHERE (p.method = 'card' AND p.payment_kind = 'charge' AND p.card_fingerprint IS NOT NULL) AND mz_now() <= p.created_at + CAST('1 hours' AS interval) GROUP BY 1, 2;
CREATE INDEX "card_payments_recent_keys_idx" IN CLUSTER "live_views" ON "live_deploy"."card_payments_recent" ("card_fingerprint", "window_start");
CREATE MATERIALIZED VIEW "live_deploy"."daily_store_revenue" IN CLUSTER "live_views" AS SELECT u.store_id, u.order_date, sum(u.is_order) AS order_count, sum(u.is_cancelled) AS cancelled_order_count, sum(u.gross) AS gross_revenue, sum(u.refund) AS refund_amount, sum(u.gross) - sum(u.refund) AS net_revenue FROM (SELECT o.store_id, CAST(timezone('UTC', o.placed_at) AS date) AS order_date, 1 AS is_order, CASE WHEN o.status = 'cancelled' THEN 1 ELSE 0 END AS is_cancelled, CASE WHEN o.status <> 'cancelled' THEN o.total_amount ELSE 0 END AS gross, CAST(0 AS numeric(12, 2)) AS refund FROM shop.orders AS o UNION ALL SELECT o.store_id, CAST(timezone('UTC', o.placed_at) AS date) AS order_date, 0 AS is_order, 0 AS is_cancelled, CAST(0 AS numeric(12, 2)) AS gross, p.amount AS refund FROM shop.payments AS p INNER JOIN shop.orders AS o ON o.order_id = p.order_id WHERE p.payment_kind = 'refund' AND p.status <> 'failed') AS u GROUP BY u.store_id, u.order_date;
CREATE INDEX "daily_store_revenue_keys_idx" IN CLUSTER "live_views" ON "live_deploy"."daily_store_revenue" ("store_id", "order_date");
CREATE MATERIALIZED VIEW "live_deploy"."late_deliveries_daily" IN CLUSTER "live_views" AS SELECT d.store_id, CAST(timezone('UTC', d.promised_at) AS date) AS promised_date, count(*) AS delivery_count, count(*) FILTER (WHERE d.delivered_at IS NOT NULL) AS delivered_count, count(*) FILTER (WHERE d.delivered_at > d.promised_at) AS late_count, max(d.delivered_at - d.promised_at) AS worst_delay FROM shop.deliveries AS d WHERE mz_now() <= d.promised_at + CAST('7 days' AS interval) GROUP BY 1, 2;
CREATE INDEX "late_deliveries_daily_keys_idx" IN CLUSTER "live_views" ON "live_deploy"."late_deliveries_daily" ("store_id", "promised_date");
CREATE MATERIALIZED VIEW "live_deploy"."store_cancellation_rate" IN CLUSTER "live_views" AS SELECT o.store_id, CAST(timezone('UTC', o.placed_at) AS date) AS order_date, count(*) AS order_count, count(*) FILTER (WHERE o.status = 'cancelled') AS cancelled_count, round(CAST(count(*) FILTER (WHERE o.status = 'cancelled') AS numeric) / count(*), 4) AS cancellation_rate FROM shop.orders AS o WHERE mz_now() <= o.placed_at + CAST('2 days' AS interval) GROUP BY 1, 2;
CREATE INDEX "store_cancellation_rate_keys_idx" IN CLUSTER "live_views" ON "live_deploy"."store_cancellation_rate" ("store_id", "order_date");
CREATE MATERIALIZED VIEW "live_deploy"."store_orders_last_5_minutes" IN CLUSTER "live_views" AS SELECT o.store_id, count(*) AS order_count, sum(o.total_amount) AS revenue, max(o.placed_at) AS last_order_at FROM shop.orders AS o WHERE o.status <> 'cancelled' AND mz_now() >= o.placed_at AND mz_now() < o.placed_at + CAST('5 minutes' AS interval) GROUP BY o.store_id;
CREATE INDEX "store_orders_last_5_minutes_keys_idx" IN CLUSTER "live_views" ON "live_deploy"."store_orders_last_5_minutes" ("store_id");
CREATE MATERIALIZED VIEW "live_deploy"."store_revenue_per_minute" IN CLUSTER "live_views" AS SELECT o.store_id, date_bin('1 minute', o.placed_at, CAST('2000-01-01 00:00:00+00' AS timestamptz)) AS window_start, count(*) AS order_count, sum(o.total_amount) AS revenue FROM shop.orders AS o WHERE o.status <> 'cancelled' AND mz_now() <= o.placed_at + CAST('1 days' AS interval) GROUP BY 1, 2;
CREATE INDEX "store_revenue_per_minute_keys_idx" IN CLUSTER "live_views" ON "live_deploy"."store_revenue_per_minute" ("store_id", "window_start");
-- phase: swap
ALTER SCHEMA "live" SWAP WITH "live_deploy";
DROP SCHEMA "live_deploy" CASCADE;
