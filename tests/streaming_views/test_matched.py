"""Round 38 (issue 13, left_join): NOT NULL columns of a NULL-extended table share one not-null
counter ("the table matched"), and ``count(*) FILTER (WHERE <such a column> IS NULL)`` is
``__count`` minus it (streaming_views.notnull). The view relies on those NOT NULLs: DROP NOT
NULL breaks it, clearly, and a redeploy brings the counters back."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.status import list_views
from tests.streaming_views.conftest import assert_all_equal, deploy_text
from tests.streaming_views.test_notnull import state_columns

# bench/ivm_vs_refresh.py's left_join, plus avg/bool_or/min of the NULL-extended side
LEFT = """select o.g, count(*) as n, sum(o.amt) as so, count(p.id) as paid_n,
       sum(p.amt) as paid, count(*) filter (where p.id is null) as unpaid,
       avg(p.amt) as ap, bool_or(p.ok) as bo, min(p.amt) as mn,
       count(o.id) filter (where p.ref is null) as unpaid_o
from mt.o o left join mt.p p on p.order_id = o.id group by o.g"""
# two NULL-extended tables (a chain), and one table in two roles: a counter per table role
CHAIN = """select o.g, count(p.id) as cp, sum(p.amt) as sp, count(r.id) as cr, sum(r.x) as sr,
       count(*) filter (where r.id is null) as nr, count(p2.id) as cp2, sum(p2.amt) as sp2
from mt.o o left join mt.p p on p.order_id = o.id left join mt.r r on r.pay_id = o.id
  left join mt.p p2 on p2.order_id = o.id
group by o.g"""
FULL = """select o.g, p.ref, count(o.id) as co, sum(o.amt) as so, count(p.id) as cp,
       sum(p.amt) as sp, count(*) filter (where o.id is null) as only_p
from mt.o o full join mt.p p on p.order_id = o.id group by o.g, p.ref"""
# one rule of the NULL-extended table: nothing to share, no NOT NULL relied upon
SINGLE = """select o.g, count(*) as n, sum(p.amt) as paid
from mt.o o left join mt.p p on p.order_id = o.id group by o.g"""
VIEWS = {"mt_left": LEFT, "mt_chain": CHAIN, "mt_full": FULL, "mt_single": SINGLE}


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema mt; create table mt.o (id int primary key, g int, "
                 "amt numeric(12, 2) not null);"
                 "create table mt.p (id int primary key, order_id int not null, "
                 "amt numeric(12, 2) not null, ok boolean not null, ref text not null);"
                 "create table mt.r (id int primary key, pay_id int, x int not null)")
    conn.execute("insert into mt.o select i, i % 4, i / 4.0 from generate_series(1, 40) i;"
                 "insert into mt.p select i, i / 2, i * 1.5, i % 3 = 0, 'r' || (i % 3) "
                 "from generate_series(1, 50, 3) i;"  # some orders: 0, 1 or 2 payments
                 "insert into mt.r select i, i, i * 10 from generate_series(1, 50, 6) i")
    for name, text in VIEWS.items():
        assert deploy_text(module_db, name, text) == "created"
    return module_db


def test_one_counter_per_null_extended_table(db: str, conn: psycopg.Connection) -> None:
    cols = state_columns(conn, "mt_left")
    # count(p.id) keeps "p matched" (__a2_n); sum/avg(p.amt) and bool_or(p.ok) read it; the
    # two unpaid counts are __count minus it
    assert "__a2_n" in cols
    assert {"__a3_nn", "__a4_n", "__a5_nn", "__a6_nn", "__a8_n"}.isdisjoint(cols)
    cols = state_columns(conn, "mt_chain")
    assert {"__a0_n", "__a2_n", "__a5_n"} <= cols  # p, r and p2 (another role of mt.p)
    assert {"__a1_nn", "__a3_nn", "__a4_n", "__a6_nn"}.isdisjoint(cols)
    cols = state_columns(conn, "mt_full")  # both sides NULL-extended
    assert {"__a0_n", "__a2_n"} <= cols
    assert {"__a1_nn", "__a3_nn", "__a4_n"}.isdisjoint(cols)
    assert "__a1_nn" in state_columns(conn, "mt_single")
    assert_all_equal(conn, VIEWS)


def test_writes_stay_exact(db: str, conn: psycopg.Connection) -> None:
    conn.execute("insert into mt.p values (100, 3, 'NaN', true, 'r1'), (101, 3, 2.5, false, "
                 "'r2'), (102, 999, 1, true, 'r0')")  # a second payment, one for no order
    assert_all_equal(conn, VIEWS)
    conn.execute("update mt.o set amt = amt + 1 where id % 5 = 0")
    conn.execute("update mt.p set order_id = order_id + 1 where id % 2 = 0")
    conn.execute("insert into mt.r values (200, 100, 1), (201, 101, 2)")
    assert_all_equal(conn, VIEWS)
    conn.execute("delete from mt.p where id = 100")  # the NaN leaves
    conn.execute("insert into mt.o values (999, 9, 3)")  # payment 102 finds its order
    assert_all_equal(conn, VIEWS)
    conn.execute("delete from mt.p where order_id % 3 = 0")  # orders lose their payments
    conn.execute("delete from mt.o where g = 9")  # a group emptied
    assert_all_equal(conn, VIEWS)
    with conn.transaction():
        conn.execute("update mt.o set g = g + 1 where id < 10")
        conn.execute("insert into mt.p values (300, 5, 7, true, 'r3')")
        conn.execute("delete from mt.r where id < 20")
    assert_all_equal(conn, VIEWS)
    conn.execute("delete from mt.p")
    assert_all_equal(conn, VIEWS)
    conn.execute("insert into mt.p select i, i / 2, i * 1.5, i % 3 = 0, 'r' || (i % 3) "
                 "from generate_series(1, 50, 3) i")
    assert_all_equal(conn, VIEWS)


def test_drop_not_null_breaks_the_views_that_share(db: str, conn: psycopg.Connection) -> None:
    """On main the views kept a counter per rule and DROP NOT NULL changed nothing; here a
    shared counter relies on the constraint: dropping it breaks the views that share (named,
    with the cause), not the one that does not, and a redeploy repairs them."""
    conn.execute("alter table mt.p alter column amt drop not null")  # the DDL succeeds
    conn.execute("insert into mt.p values (400, 2, null, true, 'r4')")  # so do writes
    for name in ("mt_left", "mt_chain", "mt_full"):
        with pytest.raises(psycopg.Error,
                           match=rf"(?s)live view {name} .*amt.*NOT NULL.*tidemark views deploy"):
            conn.execute(f"select * from live.{name}").fetchall()
    status = {s.name: s.status for s in list_views(db)}
    assert status["mt_left"].startswith("broken") and "NOT NULL" in status["mt_left"]
    assert status["mt_single"] == "ok"
    for name in ("mt_left", "mt_chain", "mt_full"):
        assert deploy_text(db, name, VIEWS[name]) == "repaired"
    assert "__a3_nn" in state_columns(conn, "mt_left")  # sum(p.amt) counts its own again
    assert_all_equal(conn, VIEWS)
    conn.execute("update mt.p set amt = null where id % 2 = 1")
    assert_all_equal(conn, VIEWS)


def test_drop_not_null_of_the_filter_column(db: str, conn: psycopg.Connection) -> None:
    """``count(o.id) FILTER (WHERE p.ref IS NULL)`` relies on p.ref's NOT NULL too."""
    conn.execute("alter table mt.p alter column ref drop not null")
    conn.execute("insert into mt.p values (500, 3, 1, true, null)")
    with pytest.raises(psycopg.Error, match=r"(?s)live view mt_left .*ref.*NOT NULL"):
        conn.execute("select * from live.mt_left").fetchall()
    assert deploy_text(db, "mt_left", LEFT) == "repaired"
    assert_all_equal(conn, {"mt_left": LEFT})
