"""EXISTS / NOT EXISTS / IN / NOT IN (streaming_views/semijoin.py) as semi- and anti-joins,
with and without aggregates, on a real server; NOT IN over nullable columns is refused."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text

VIEWS = {
    "paid_per_store": "select o.store_id, count(*) as paid_orders, sum(o.total) as total "
                      "from sm.orders o where exists (select 1 from sm.payments p where "
                      "p.order_id = o.order_id and p.amount > 0) group by o.store_id",
    "unpaid": "select o.order_id, o.store_id from sm.orders o where not exists "
              "(select 1 from sm.payments p where p.order_id = o.order_id) and o.total > 1",
    "in_refunded": "select o.store_id, count(*) as n from sm.orders o where o.order_id in "
                   "(select r.order_id from sm.refunds r where r.amount >= 1) group by 1",
    "not_in_strict": "select o.store_id, max(o.total) as top from sm.orders o "
                     "where o.code not in (select b.code from sm.blocked b) group by 1",
    "both": "select o.store_id, count(*) as n from sm.orders o where exists (select 1 from "
            "sm.payments p where p.order_id = o.order_id) and not exists (select 1 from "
            "sm.refunds r where r.order_id = o.order_id) group by 1",
    "left_and_exists": "select o.store_id, count(p.payment_id) as payments, count(*) as n "
                       "from sm.orders o left join sm.payments p on p.order_id = o.order_id "
                       "where not exists (select 1 from sm.refunds r where r.order_id = "
                       "o.order_id) group by 1",
    "self_exists": "select o.store_id, count(*) as repeat_orders from sm.orders o where exists "
                   "(select 1 from sm.orders o2 where o2.code = o.code and "
                   "o2.order_id < o.order_id) group by 1",
}


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("""
        create schema sm;
        create table sm.orders (order_id int primary key, store_id int, total numeric,
                                code int not null);
        create table sm.payments (payment_id int primary key, order_id int, amount numeric);
        create table sm.refunds (refund_id int primary key, order_id int, amount numeric);
        create table sm.blocked (code int not null);
        create table sm.maybe (code int);
        insert into sm.orders select i, i % 4, i * 1.5, i % 9 from generate_series(1, 50) i;
        insert into sm.payments select i, i % 60, i % 5 from generate_series(1, 40) i;
        insert into sm.refunds select i, i * 3, i % 3 from generate_series(1, 10) i;
        insert into sm.blocked values (1), (2), (2);
    """)
    for name, text in VIEWS.items():
        deploy_text(module_db, name, text)
    return module_db


WRITES = [
    "insert into sm.payments values (100, 41, 3)",  # an order becomes paid
    "delete from sm.payments where order_id = 2",  # ... and one unpaid
    "update sm.payments set amount = 0 where order_id between 3 and 8",
    "update sm.payments set order_id = order_id + 1 where payment_id % 7 = 0",
    "insert into sm.payments values (101, null, 5), (102, 999, 1)",
    "insert into sm.refunds values (50, 1, 5), (51, 1, 0.5), (52, null, 1)",
    "delete from sm.refunds where refund_id = 50",
    "insert into sm.blocked values (3), (3)",
    "delete from sm.blocked where code = 2",
    "update sm.orders set code = 8, total = total + 1 where order_id % 5 = 0",
    "insert into sm.orders values (200, 1, 7, 1), (201, 2, 8, 4)",
    "delete from sm.orders where order_id in (3, 4, 200)",
    "update sm.orders set order_id = order_id + 500 where order_id in (10, 11)",
    "truncate sm.payments",
]


@pytest.mark.parametrize("step", range(len(WRITES)))
def test_each_write_keeps_every_semi_join_exact(db: str, conn: psycopg.Connection,
                                                step: int) -> None:
    conn.execute(WRITES[step])
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)


def test_one_transaction_on_both_sides(db: str, conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("insert into sm.orders values (300, 3, 1, 5)")
        conn.execute("insert into sm.payments values (300, 300, 1)")
        conn.execute("insert into sm.refunds values (300, 300, 9)")
        conn.execute("delete from sm.refunds where refund_id = 300")
        conn.execute("update sm.orders set store_id = 0 where order_id = 300")
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)


@pytest.mark.parametrize(("text", "construct"), [
    ("select o.order_id from sm.orders o where o.code not in (select m.code from sm.maybe m)",
     "NOT IN (subquery) over a nullable column"),
    ("select o.order_id from sm.orders o where o.store_id not in "
     "(select b.code from sm.blocked b)", "NOT IN (subquery) over a nullable column"),
    ("select o.order_id from sm.orders o where exists (select 1 from sm.payments p)",
     "uncorrelated EXISTS"),
    ("select o.order_id from sm.orders o where exists (select 1 from sm.payments p "
     "where p.order_id = o.order_id) or o.total > 1", "subquery in an expression"),
    ("select o.order_id from sm.orders o where exists (select count(*) from sm.payments p "
     "where p.order_id = o.order_id group by p.order_id)",
     "EXISTS with a grouped or limited subquery"),
    ("select o.order_id from sm.orders o where o.order_id in (select p.order_id from "
     "sm.payments p join sm.refunds r on r.order_id = p.order_id)", "IN (subquery) over "
     "several tables"),
])
def test_refusals(db: str, text: str, construct: str) -> None:
    with pytest.raises(UnsupportedViewError) as info:
        deploy_text(db, "refused", text)
    assert info.value.construct == construct, info.value
    assert info.value.line == 1
