"""Outer joins (streaming_views/outer.py): LEFT/RIGHT/FULL with and without aggregates, rows
NULL-extended as matches come and go, on a real server; the refusals name the construct."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text

PER_STORE_DAY = """
select o.store_id, (o.placed_at at time zone 'UTC')::date as order_date,
       count(*) as order_rows, count(p.payment_id) as payments,
       count(*) filter (where p.payment_id is null) as unpaid_orders,
       sum(p.amount) as paid, coalesce(sum(p.amount), 0) as paid0,
       max(p.amount) as biggest, count(distinct o.order_id) as orders
from oj.orders o left join oj.payments p on p.order_id = o.order_id
group by 1, 2
"""
ROWS = {
    "left_rows": "select o.order_id, o.store_id, p.payment_id, p.amount from oj.orders o "
                 "left join oj.payments p on p.order_id = o.order_id",
    "right_rows": "select o.order_id, p.payment_id, p.amount from oj.orders o "
                  "right join oj.payments p on p.order_id = o.order_id and p.amount > 1",
    "full_agg": "select o.store_id, count(*) as n, count(o.order_id) as orders, "
                "sum(p.amount) as paid, min(p.amount) as low from oj.orders o "
                "full join oj.payments p on p.order_id = o.order_id group by 1",
    "three_way": "select o.store_id, count(r.refund_id) as refunds, count(p.payment_id) as "
                 "payments, count(*) as n from oj.orders o left join oj.payments p on "
                 "p.order_id = o.order_id full join oj.refunds r on r.order_id = o.order_id "
                 "where o.store_id is distinct from 3 group by 1",
    "full_distinct": "select o.store_id, count(distinct p.amount) as amounts from oj.orders o "
                     "full join oj.payments p on p.order_id = o.order_id group by 1",
    "distinct_unpaid": "select distinct o.store_id from oj.orders o left join oj.payments p "
                       "on p.order_id = o.order_id where p.payment_id is null",
}


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("""
        create schema oj;
        create table oj.orders (order_id int primary key, store_id int, placed_at timestamptz);
        create table oj.payments (payment_id int primary key, order_id int,
                                  amount numeric(12, 2));
        create table oj.refunds (refund_id int primary key, order_id int, amount numeric);
        insert into oj.orders select i, i % 4, timestamptz '2026-01-01' + i * interval '7 h'
            from generate_series(1, 40) i;
        insert into oj.payments select i, i % 50, i / 3.0 from generate_series(1, 30) i;
        insert into oj.refunds select i, i * 2, i from generate_series(1, 8) i;
    """)
    deploy_text(module_db, "per_store_day", PER_STORE_DAY)
    for name, text in ROWS.items():
        deploy_text(module_db, name, text)
    return module_db


def check_all(conn: psycopg.Connection) -> None:
    assert_equal(conn, "per_store_day", PER_STORE_DAY)
    for name, text in ROWS.items():
        assert_equal(conn, name, text)


WRITES = [
    # a payment arrives for an unpaid order: its NULL-extended row disappears
    "insert into oj.payments values (100, 35, 9.5)",
    # a second payment for the same order, and one for an order that does not exist yet
    "insert into oj.payments values (101, 35, 1.25), (102, 77, 3)",
    # the order arrives: the payment's NULL-extended (RIGHT/FULL) row becomes matched
    "insert into oj.orders values (77, 2, '2026-01-03 10:00+00')",
    # the last payment of an order goes: the order's NULL-extended row comes back
    "delete from oj.payments where order_id = 35",
    # a payment moves from one order to another (both keys change)
    "update oj.payments set order_id = 36 where payment_id = 5",
    # an order moves store and day: its matched rows move group
    "update oj.orders set store_id = 3, placed_at = placed_at + interval '1 day' "
    "where order_id in (5, 6, 36)",
    # NULL keys never match: a payment without order, an order ... with everything
    "insert into oj.payments values (103, null, 4), (104, null, 4)",
    "update oj.payments set order_id = null where payment_id = 7",
    "update oj.payments set order_id = 7 where payment_id = 103",
    # a delete of an order with payments: they become unmatched (RIGHT/FULL)
    "delete from oj.orders where order_id in (7, 8, 9)",
    # same value, other scale: the old row is found by its text
    "update oj.payments set amount = 2.00 where payment_id = 6",
    "insert into oj.refunds values (50, 12, 1.0), (51, 12, 1.00), (52, null, 2)",
    "delete from oj.refunds where refund_id = 51",
]


@pytest.mark.parametrize("step", range(len(WRITES)))
def test_each_write_keeps_every_outer_join_view_exact(db: str, conn: psycopg.Connection,
                                                       step: int) -> None:
    conn.execute(WRITES[step])
    check_all(conn)


def test_one_transaction_changing_both_sides(db: str, conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("insert into oj.orders values (200, 1, '2026-01-05 01:00+00')")
        conn.execute("insert into oj.payments values (200, 200, 5), (201, 200, 6)")
        conn.execute("delete from oj.payments where payment_id = 201")
        conn.execute("update oj.orders set store_id = 2 where order_id = 200")
        conn.execute("insert into oj.payments values (201, 200, 7)")  # same key again
        conn.execute("delete from oj.orders where order_id = 10")
        conn.execute("insert into oj.orders values (10, 0, '2026-01-01 00:00+00')")
    check_all(conn)
    with conn.transaction():  # inserted and deleted in one transaction: nothing changes
        conn.execute("insert into oj.payments values (300, 11, 1)")
        conn.execute("delete from oj.payments where payment_id = 300")
        conn.execute("insert into oj.orders values (300, 1, null)")
        conn.execute("delete from oj.orders where order_id = 300")
    check_all(conn)


def test_bulk_and_truncate(db: str, conn: psycopg.Connection) -> None:
    conn.execute("insert into oj.orders select i, i % 7, timestamptz '2026-02-01' + i * "
                 "interval '1 h' from generate_series(1000, 4000) i")
    conn.execute("insert into oj.payments select i, 1000 + (i * 7) % 3500, i % 13 "
                 "from generate_series(1000, 6000) i")
    check_all(conn)
    conn.execute("update oj.payments set amount = amount + 1 where payment_id % 3 = 0")
    conn.execute("delete from oj.orders where order_id % 5 = 0")
    check_all(conn)
    conn.execute("truncate oj.refunds")
    check_all(conn)


@pytest.mark.parametrize(("text", "construct"), [
    ("select a.order_id from oj.orders a left join oj.payments p on p.amount > 1",
     "LEFT JOIN on another key"),
    ("select a.order_id from oj.orders a left join oj.payments p using (order_id)",
     "LEFT JOIN with USING/NATURAL"),
    ("select a.order_id from oj.orders a left join oj.payments p on p.order_id = a.order_id "
     "join oj.refunds r on r.refund_id = p.payment_id", "LEFT JOIN on another key"),
    ("select a.order_id from oj.refunds r, oj.orders a left join oj.payments p on "
     "p.order_id = a.order_id", "LEFT JOIN in a comma-separated FROM"),
])
def test_refusals_name_the_construct(db: str, text: str, construct: str) -> None:
    with pytest.raises(UnsupportedViewError) as info:
        deploy_text(db, "refused", text)
    assert info.value.construct == construct
    assert info.value.rewrite and "left join" in info.value.rewrite
    assert info.value.line == 1


ACCEPTANCE = """
select o.store_id, (o.placed_at at time zone 'UTC')::date as order_date,
       count(distinct o.order_id) as orders, count(p.payment_id) as payments,
       count(*) filter (where p.payment_id is null) as unpaid_orders,
       coalesce(sum(p.amount) filter (where p.payment_kind = 'charge'
                                      and p.status <> 'failed'), 0) as charged
from shop.orders o left join shop.payments p on p.order_id = o.order_id
group by 1, 2
"""


def test_demo_orders_left_join_payments_per_store_per_day(module_db: str,
                                                          conn: psycopg.Connection) -> None:
    """Issue 13's acceptance example on the demo schema, under the demo's own write load
    (orders placed, paid, refunded, cancelled by concurrent transactions)."""
    from datetime import UTC, datetime

    from tidemark.demo.load import run_load
    from tidemark.demo.seed import seed_history
    seed_history(module_db, days=2, orders_per_day=150, seed=7,
                 end=datetime(2026, 3, 1, tzinfo=UTC), schema="shop")
    deploy_text(module_db, "orders_payments_daily", ACCEPTANCE)
    assert_equal(conn, "orders_payments_daily", ACCEPTANCE)
    stats = run_load(make_conninfo(module_db, options="-csearch_path=shop"), rate=300, duration_s=3,
                     seed=8)
    assert stats.transactions > 0
    assert_equal(conn, "orders_payments_daily", ACCEPTANCE)
    unpaid = conn.execute("select sum(unpaid_orders) from live.orders_payments_daily").fetchone()
    assert unpaid[0] is not None
