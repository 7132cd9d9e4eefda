"""Issue 13: aggregates of a NOT NULL column keep no not-null counter (streaming_views.notnull),
and the view relies on the constraint: DROP NOT NULL breaks it, clearly, like a dropped column."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views import verify
from streaming_views.status import list_views
from tests.streaming_views.conftest import assert_all_equal, assert_equal, deploy_text

JOINED = """select o.g, count(*) as n, sum(o.amt) as so, avg(o.amt) as ao, count(o.amt) as co,
       sum(p.amt) as sp, count(p.amt) as cp, bool_and(o.flag) as ba, bool_or(o.flag) as bo,
       sum(o.v) as sv, sum(o.amt) filter (where o.v > 0) as sf, count(o.id) filter (where o.v > 0)
       as cf, avg(o.big) as ab
from nn.o o left join nn.p p on p.order_id = o.id group by o.g"""
RIGHT = """select o.g, sum(o.amt) as so, sum(p.amt) as sp, count(p.amt) as cp
from nn.p p right join nn.o o on o.id = p.order_id group by o.g"""
GLOBAL = "select sum(o.amt) as s, avg(o.amt) as a, count(o.amt) as c from nn.o o"
KEYED = "select o.amt, count(*) as n from nn.o o group by o.amt"
PARTED = "select e.k, sum(e.x) as sx, count(e.x) as cx from nn.e e group by e.k"
VIEWS = {"nn_joined": JOINED, "nn_right": RIGHT, "nn_global": GLOBAL, "nn_keyed": KEYED,
         "nn_parted": PARTED}


def state_columns(conn: psycopg.Connection, name: str) -> set[str]:
    suffix = conn.execute("select suffix from tidemark.views where name = %s and "
                          "target = 'embedded'", (name,)).fetchone()[0]
    rows = conn.execute("select attname from pg_attribute where attrelid = %s::regclass and "
                        "attnum > 0 and not attisdropped",
                        (f'tidemark_state."{suffix}"',)).fetchall()
    return {r[0] for r in rows}


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema nn; create table nn.o (id int primary key, g int, "
                 "amt numeric(12, 2) not null, flag boolean not null, v int, big bigint not null);"
                 "create table nn.p (id int primary key, order_id int not null, "
                 "amt numeric not null);"
                 "create table nn.e (k int not null, x int not null) partition by list (k);"
                 "create table nn.e1 partition of nn.e for values in (1);"
                 "create table nn.e2 partition of nn.e for values in (2)")
    conn.execute("insert into nn.o select i, i % 3, i / 4.0, i % 2 = 0, nullif(i % 4, 0), i "
                 "from generate_series(1, 30) i; insert into nn.p select i, i, i * 1.5 "
                 "from generate_series(1, 30, 2) i; insert into nn.e select 1 + i % 2, i "
                 "from generate_series(1, 10) i")
    for name, text in VIEWS.items():
        assert deploy_text(module_db, name, text) == "created"
    return module_db


def test_not_null_columns_keep_no_counter(db: str, conn: psycopg.Connection) -> None:
    cols = state_columns(conn, "nn_joined")
    # sum/avg(o.amt), count(o.amt), bool_and/or(o.flag), avg(o.big): no counter;
    # sum(p.amt) (NULL-extended side), sum(o.v) (nullable), the FILTERed sum: kept;
    # count(p.amt) reads sum(p.amt)'s counter (both: "p matched", streaming_views.notnull)
    assert {"__a1_nn", "__a3_n", "__a6_nn", "__a7_nn", "__a11_nn", "__a5_n"}.isdisjoint(cols)
    assert {"__a4_nn", "__a8_nn", "__a9_nn", "__a10_n"} <= cols
    assert "__a0_nn" not in state_columns(conn, "nn_right")
    assert "__a1_nn" in state_columns(conn, "nn_right")
    assert "__a2_n" not in state_columns(conn, "nn_right")
    assert "__a0_nn" not in state_columns(conn, "nn_global")
    assert "__a0_nn" not in state_columns(conn, "nn_parted")
    assert_all_equal(conn, VIEWS)


def test_writes_stay_exact(db: str, conn: psycopg.Connection) -> None:
    conn.execute("insert into nn.o values (100, 7, 'NaN', true, null, 5), "
                 "(101, 7, 2.5, false, 1, 6)")
    assert_all_equal(conn, VIEWS)
    conn.execute("delete from nn.o where id = 100")
    assert_all_equal(conn, VIEWS)
    conn.execute("update nn.o set amt = amt + 1, g = 8 where id % 5 = 0")
    conn.execute("insert into nn.p values (200, 101, 4), (201, 2, 'NaN')")
    assert_all_equal(conn, VIEWS)
    conn.execute("delete from nn.p where id in (200, 201)")
    conn.execute("delete from nn.o where g = 7")  # a group emptied
    assert_all_equal(conn, VIEWS)
    conn.execute("delete from nn.o")  # the global view's one row: NULL sums, count 0
    conn.execute("update nn.e set x = x + 1 where k = 1")
    assert_all_equal(conn, VIEWS)
    assert conn.execute("select s, a, c from live.nn_global").fetchone() == (None, None, 0)
    conn.execute("insert into nn.o select i, i % 3, i / 4.0, i % 2 = 0, nullif(i % 4, 0), i "
                 "from generate_series(1, 30) i")
    assert_all_equal(conn, VIEWS)


def test_drop_not_null_breaks_the_view(db: str, conn: psycopg.Connection) -> None:
    """On main the view kept its counters and DROP NOT NULL changed nothing; here the view
    relies on the constraint, so dropping it breaks the view (named, with the cause), writes
    keep working, and deploy repairs it with its counters back."""
    conn.execute("alter table nn.o alter column amt drop not null")  # the DDL succeeds
    conn.execute("insert into nn.o values (300, 1, null, true, 1, 1)")  # so do writes
    for name in ("nn_joined", "nn_right", "nn_global"):
        with pytest.raises(psycopg.Error,
                           match=rf"(?s)live view {name} .*amt.*NOT NULL.*tidemark views deploy"):
            conn.execute(f"select * from live.{name}").fetchall()
    status = {s.name: s.status for s in list_views(db)}
    assert status["nn_joined"].startswith("broken") and "NOT NULL" in status["nn_joined"]
    assert status["nn_keyed"] == "ok" and status["nn_parted"] == "ok"  # they do not rely on it
    assert_equal(conn, "nn_keyed", KEYED)
    for name in ("nn_joined", "nn_right", "nn_global"):
        assert deploy_text(db, name, VIEWS[name]) == "repaired"
    assert "__a1_nn" in state_columns(conn, "nn_joined")
    assert_all_equal(conn, VIEWS)
    conn.execute("insert into nn.o values (301, 1, null, false, 2, 2)")
    conn.execute("delete from nn.o where id = 300")
    assert_all_equal(conn, VIEWS)


def test_without_the_guard_verify_finds_it(db: str, conn: psycopg.Connection) -> None:
    conn.execute("update nn.e set x = x where false")
    conn.execute("alter event trigger tidemark_live_ddl_end disable")
    try:
        conn.execute("alter table nn.e alter column x drop not null")
    finally:
        conn.execute("alter event trigger tidemark_live_ddl_end enable")
    [result] = verify(db, "nn_parted")
    assert not result.ok and "column x of nn.e is no longer NOT NULL" in (result.problem or "")
    assert deploy_text(db, "nn_parted", PARTED) == "repaired"
    conn.execute("insert into nn.e values (1, null)")
    assert_equal(conn, "nn_parted", PARTED)


def test_a_not_valid_not_null_keeps_the_counter(db: str, conn: psycopg.Connection) -> None:
    """PostgreSQL 18's NOT VALID NOT NULL sets attnotnull but leaves the NULLs already there:
    the view keeps its counter (and stays exact); VALIDATE then a redeploy drops it."""
    if conn.info.server_version < 180000:
        pytest.skip("NOT VALID NOT NULL constraints are PostgreSQL 18's")
    conn.execute("create table nn.q (id int primary key, g int, x int)")
    conn.execute("insert into nn.q values (1, 1, null), (2, 1, 5)")
    conn.execute("alter table nn.q add constraint q_x_nn not null x not valid")
    view = "select q.g, sum(q.x) as sx, count(q.x) as cx from nn.q q group by q.g"
    assert deploy_text(db, "nn_invalid", view) == "created"
    assert {"__a0_nn", "__a1_n"} <= state_columns(conn, "nn_invalid")
    conn.execute("insert into nn.q values (3, 1, 7)")
    assert_equal(conn, "nn_invalid", view)
