"""Non-recursive WITH (inlined) and FROM subqueries joined to tables (pulled up), by
streaming_views/inline.py, and two-level aggregation (streaming_views/twolevel.py), on a real
server; the refusals name the construct."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text

VIEWS = {
    "with_join": "with big as (select o.order_id, o.store_id, o.total * 2 as double "
                 "from il.orders o where o.total > 5) select b.store_id, count(*) as n, "
                 "sum(b.double) as d from big b join il.stores s on s.store_id = b.store_id "
                 "group by b.store_id",
    "sub_left": "select o.store_id, count(p.payment_id) as payments, sum(p.amount) as paid "
                "from il.orders o left join (select q.payment_id, q.order_id, q.amount from "
                "il.payments q where q.amount > 1) p on p.order_id = o.order_id group by 1",
    "sub_inner": "select s.region, x.flag, count(*) as n from (select o.store_id, "
                 "o.total > 10 as flag from il.orders o) x join il.stores s "
                 "on s.store_id = x.store_id group by 1, 2",
    "cte_twice": "with o as (select r.order_id, r.store_id from il.orders r) select a.store_id, "
                 "count(*) as pairs from o a join o b on b.store_id = a.store_id and "
                 "b.order_id < a.order_id group by 1",
    "cte_exists": "with paid as (select p.order_id from il.payments p where p.amount > 0) "
                  "select o.store_id, count(*) as n from il.orders o where exists (select 1 "
                  "from il.payments p2 where p2.order_id = o.order_id) group by 1",
    "distribution": "select c.n, count(*) as stores from (select o.store_id, count(*) as n "
                    "from il.orders o group by o.store_id) c group by c.n",
    "two_level_global": "select count(*) as groups, sum(c.total) as total, max(c.total) as top "
                        "from (select o.store_id, sum(o.total) as total from il.orders o "
                        "where o.total > 2 group by 1 having count(*) > 1) c",
    "two_level_rows": "select c.store_id, c.n, c.big from (select o.store_id, count(*) as n, "
                      "bool_or(o.total > 30) as big from il.orders o group by o.store_id) c "
                      "where c.n > 3",
    "nested": "select y.store_id, y.t from (select x.store_id, x.t from (select o.store_id, "
              "o.total as t from il.orders o) x where x.t < 40) y",
}


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("""
        create schema il;
        create table il.stores (store_id int primary key, region text);
        create table il.orders (order_id int primary key, store_id int, total numeric);
        create table il.payments (payment_id int primary key, order_id int, amount numeric);
        insert into il.stores select i, 'r' || (i % 2) from generate_series(0, 4) i;
        insert into il.orders select i, i % 5, i from generate_series(1, 40) i;
        insert into il.payments select i, i % 45, i % 4 from generate_series(1, 30) i;
    """)
    for name, text in VIEWS.items():
        deploy_text(module_db, name, text)
    return module_db


WRITES = [
    "insert into il.orders values (100, 2, 50), (101, 9, 3)",
    "insert into il.orders values (102, null, 4), (103, null, 5), (104, 7, 1)",
    "update il.orders set store_id = null where order_id in (1, 104)",
    "update il.orders set total = total + 7 where order_id % 3 = 0",
    "update il.orders set store_id = 1 where order_id between 5 and 9",
    "insert into il.payments values (100, 100, 9), (101, 1, 0.5)",
    "update il.payments set amount = 5 where payment_id < 10",
    "delete from il.payments where order_id % 2 = 0",
    "update il.stores set region = 'r9' where store_id = 1",
    "delete from il.orders where order_id % 4 = 0",
    "truncate il.payments",
]


@pytest.mark.parametrize("step", range(len(WRITES)))
def test_each_write_keeps_inlined_views_exact(db: str, conn: psycopg.Connection,
                                              step: int) -> None:
    conn.execute(WRITES[step])
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)


def test_live_view_keeps_the_subquery_column_names(db: str, conn: psycopg.Connection) -> None:
    cols = [r[0] for r in conn.execute("select column_name from information_schema.columns "
                                       "where table_schema = 'live' and table_name = 'nested' "
                                       "order by ordinal_position").fetchall()]
    assert cols == ["store_id", "t"]


@pytest.mark.parametrize(("text", "construct"), [
    ("select c.n, count(*) as customers from (select o.store_id, count(*) as n from il.orders o "
     "join il.stores s on s.store_id = o.store_id group by o.store_id) c group by c.n",
     "two-level aggregation over several tables"),
    ("select c.n, count(*) as customers from (select o.total > 5 as big, count(*) as n from "
     "il.orders o group by 1) c group by c.n", "two-level aggregation grouped by an expression"),
    ("with recursive r as (select o.order_id from il.orders o) select r.order_id from r",
     "WITH RECURSIVE"),
])
def test_refusals(db: str, text: str, construct: str) -> None:
    with pytest.raises(UnsupportedViewError) as info:
        deploy_text(db, "refused", text)
    assert info.value.construct == construct
    assert info.value.rewrite
