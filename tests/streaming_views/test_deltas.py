"""Statements that change several base tables of one view at once are still applied exactly: the
inclusion-exclusion of the logs (cascades, writable CTEs, several tables in one transaction)."""

from __future__ import annotations

import psycopg

from tests.streaming_views.conftest import assert_equal, deploy_text

VIEW = """select p.region, count(*) as items, sum(c.qty) as qty, max(c.qty) as top
from fk.parent p join fk.child c on c.parent_id = p.id group by p.region"""


def test_cascade_and_writable_cte_on_join_view(module_db: str, conn: psycopg.Connection):
    conn.execute("create schema fk; create table fk.parent (id int primary key, region text);"
                 "create table fk.child (id int primary key, parent_id int references "
                 "fk.parent (id) on delete cascade on update cascade, qty int)")
    conn.execute("insert into fk.parent select i, 'r' || (i % 3) from generate_series(1, 20) i")
    conn.execute("insert into fk.child select i, 1 + i % 20, i from generate_series(1, 100) i")
    deploy_text(module_db, "fk_view", VIEW)
    conn.execute("delete from fk.parent where id <= 5")          # cascades into fk.child
    assert_equal(conn, "fk_view", VIEW)
    conn.execute("update fk.parent set id = id + 100 where id between 6 and 8")  # cascades
    assert_equal(conn, "fk_view", VIEW)
    conn.execute("with p as (update fk.parent set region = 'moved' where id = 10 returning id) "
                 "update fk.child set qty = qty + 1000 where parent_id in (select id from p)")
    assert_equal(conn, "fk_view", VIEW)
    with conn.transaction():
        conn.execute("insert into fk.parent values (500, 'tx')")
        conn.execute("insert into fk.child values (500, 500, 7)")
        conn.execute("delete from fk.child where id < 30")
    assert_equal(conn, "fk_view", VIEW)
    assert conn.execute("select items from live.fk_view where region = 'tx'").fetchone() == (1,)
