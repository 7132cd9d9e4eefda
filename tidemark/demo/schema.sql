-- The demo source "shop": a grocery-delivery business (OLTP), in the source database's
-- public schema. Every table has a primary key and REPLICA IDENTITY FULL (Materialize needs it,
-- and it gives ingestion the old row of every update and delete).
-- All timestamps are timestamptz in UTC; money is numeric(12, 2) in the store's currency.

create table if not exists stores (
    store_id integer primary key,
    store_name text not null,
    city text not null,
    region text not null,
    opened_at timestamptz not null,
    is_active boolean not null default true
);

create table if not exists customers (
    customer_id bigint primary key,
    customer_name text not null,
    email text not null,
    city text not null,
    signed_up_at timestamptz not null,
    updated_at timestamptz not null
);

create table if not exists products (
    product_id integer primary key,
    product_name text not null,
    category text not null,
    unit_price numeric(12, 2) not null check (unit_price >= 0),
    tags text[] not null default '{}',
    is_active boolean not null default true
);

-- status: placed -> paid -> delivered, or placed/paid -> cancelled.
create table if not exists orders (
    order_id bigint primary key,
    store_id integer not null references stores (store_id),
    customer_id bigint not null references customers (customer_id),
    status text not null check (status in ('placed', 'paid', 'delivered', 'cancelled')),
    placed_at timestamptz not null,
    updated_at timestamptz not null,
    total_amount numeric(12, 2) not null check (total_amount >= 0),
    delivery_notes text
);
create index if not exists orders_placed_at_idx on orders (placed_at);

create table if not exists order_items (
    order_id bigint not null references orders (order_id) on delete cascade,
    line_number integer not null,
    product_id integer not null references products (product_id),
    quantity integer not null check (quantity > 0),
    unit_price numeric(12, 2) not null check (unit_price >= 0),
    primary key (order_id, line_number)
);

-- payment_kind 'charge' pays an order, 'refund' gives (part of) it back; amount is positive.
-- status: authorized -> captured -> settled, or failed.
create table if not exists payments (
    payment_id bigint primary key,
    order_id bigint not null references orders (order_id),
    payment_kind text not null check (payment_kind in ('charge', 'refund')),
    method text not null check (method in ('card', 'wallet', 'voucher')),
    card_fingerprint text,
    amount numeric(12, 2) not null check (amount > 0),
    status text not null check (status in ('authorized', 'captured', 'settled', 'failed')),
    created_at timestamptz not null,
    updated_at timestamptz not null
);
create index if not exists payments_order_idx on payments (order_id);

-- status: pending -> dispatched -> delivered, or failed.
create table if not exists deliveries (
    delivery_id bigint primary key,
    order_id bigint not null unique references orders (order_id),
    store_id integer not null references stores (store_id),
    courier_id integer,
    status text not null check (status in ('pending', 'dispatched', 'delivered', 'failed')),
    promised_at timestamptz not null,
    dispatched_at timestamptz,
    delivered_at timestamptz,
    updated_at timestamptz not null
);

-- Transactional outbox of the mobile app. event_id is the idempotency key: the app may emit the
-- same event twice, so it is NOT unique here; outbox_id is the row's own key. event_time comes
-- from the device (may be late); received_at is when the backend stored it.
create table if not exists app_events (
    outbox_id bigint generated always as identity primary key,
    event_id uuid not null,
    event_type text not null,
    event_time timestamptz not null,
    received_at timestamptz not null default now(),
    customer_id bigint,
    session_id uuid,
    payload jsonb not null
);
create index if not exists app_events_event_id_idx on app_events (event_id);

alter table stores replica identity full;
alter table customers replica identity full;
alter table products replica identity full;
alter table orders replica identity full;
alter table order_items replica identity full;
alter table payments replica identity full;
alter table deliveries replica identity full;
alter table app_events replica identity full;
