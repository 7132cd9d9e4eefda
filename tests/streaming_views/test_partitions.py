"""Issue 11, class 3: partitioned (and inheritance) base tables — writes straight into a
partition are maintained, for partitions present at deploy and created or attached later."""

from __future__ import annotations

import psycopg
import pytest

from tests.streaming_views.conftest import assert_equal, deploy_text

VIEW = """select e.kind, count(*) as n, sum(e.v) as sv, max(e.v) as mx
from pt.events e where e.v > 0 group by e.kind"""
JOINED = """select k.label, count(*) as n, sum(e.v) as sv
from pt.events e join pt.kinds k on k.kind = e.kind group by k.label"""


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("""
        create schema pt;
        create table pt.events (id int, day date, kind text, v int) partition by range (day);
        create table pt.p_jan partition of pt.events
            for values from ('2026-01-01') to ('2026-02-01');
        create table pt.p_feb partition of pt.events
            for values from ('2026-02-01') to ('2026-03-01') partition by list (kind);
        create table pt.p_feb_a partition of pt.p_feb for values in ('a');
        create table pt.p_feb_rest partition of pt.p_feb default;
        create table pt.kinds (kind text primary key, label text);
        insert into pt.kinds values ('a', 'A'), ('b', 'B'), ('c', 'B');
        insert into pt.events values (1, '2026-01-05', 'a', 1), (2, '2026-02-05', 'b', 2);
    """)
    assert deploy_text(module_db, "by_kind", VIEW) == "created"
    assert deploy_text(module_db, "by_label", JOINED) == "created"
    return module_db


def check(conn: psycopg.Connection) -> None:
    assert_equal(conn, "by_kind", VIEW)
    assert_equal(conn, "by_label", JOINED)


def test_writes_straight_into_partitions(db: str, conn: psycopg.Connection) -> None:
    conn.execute("insert into pt.p_jan values (3, '2026-01-06', 'a', 5)")
    check(conn)
    conn.execute("insert into pt.p_feb values (4, '2026-02-06', 'a', 7), (5, '2026-02-07', 'c', 1)")
    check(conn)
    conn.execute("insert into pt.p_feb_rest values (6, '2026-02-08', 'b', 9)")
    check(conn)
    conn.execute("update pt.p_feb_a set v = v * 10")
    check(conn)
    conn.execute("update pt.events set day = '2026-02-10' where id = 1")  # moves partitions
    check(conn)
    conn.execute("delete from pt.p_feb_rest where id = 6")
    check(conn)
    conn.execute("truncate pt.p_jan")
    check(conn)
    with conn.transaction():
        conn.execute("merge into pt.p_feb_a t using (values (4, 100), (40, 3)) s(id, v) "
                     "on t.id = s.id when matched then update set v = s.v "
                     "when not matched then insert values (s.id, '2026-02-11', 'a', s.v)")
    check(conn)


def test_partitions_created_attached_and_detached_later(db: str,
                                                         conn: psycopg.Connection) -> None:
    conn.execute("create table pt.p_mar partition of pt.events "
                 "for values from ('2026-03-01') to ('2026-04-01')")
    conn.execute("insert into pt.p_mar values (20, '2026-03-02', 'b', 3)")
    check(conn)
    conn.execute("create table pt.p_apr (id int, day date, kind text, v int)")
    conn.execute("insert into pt.p_apr values (30, '2026-04-02', 'a', 11), "
                 "(31, '2026-04-03', 'zz', 1)")
    conn.execute("alter table pt.events attach partition pt.p_apr "
                 "for values from ('2026-04-01') to ('2026-05-01')")
    check(conn)  # the attached rows appear in the view
    conn.execute("insert into pt.p_apr values (32, '2026-04-04', 'c', 2)")
    check(conn)
    conn.execute("alter table pt.events detach partition pt.p_mar")
    check(conn)  # the detached rows leave it
    conn.execute("insert into pt.p_mar values (21, '2026-03-03', 'b', 3)")  # not in the view
    check(conn)


def test_inheritance_children(db: str, conn: psycopg.Connection) -> None:
    conn.execute("create table pt.base (id int, g int); create table pt.child () "
                 "inherits (pt.base)")
    text = "select b.g, count(*) as n from pt.base b group by b.g"
    assert deploy_text(db, "inherited", text) == "created"
    conn.execute("insert into pt.child values (1, 1), (2, 1)")
    conn.execute("insert into pt.base values (3, 2)")
    assert_equal(conn, "inherited", text)
    conn.execute("create table pt.child2 () inherits (pt.base)")
    conn.execute("insert into pt.child2 values (4, 2)")
    assert_equal(conn, "inherited", text)
    conn.execute("delete from pt.child where id = 1")
    assert_equal(conn, "inherited", text)
