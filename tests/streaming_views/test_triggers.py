"""The maintenance functions and the state: a transaction's first logged row is its marker, a
group's update is HOT (no index on ``__count``), and :func:`looped`, the statement the apply
loops over."""

from __future__ import annotations

import psycopg

from streaming_views.compiler import looped, with_upsert
from tests.streaming_views.conftest import assert_equal, deploy_text, parents_and_children

FIRST = """select p.region, count(*) as n, sum(c.qty) as qty
from fr.parent p join fr.child c on c.parent_id = p.id group by p.region"""


def test_the_first_row_logged_is_the_marker(module_db: str, conn: psycopg.Connection) -> None:
    """A transaction's marker (it fires the view's apply at commit) is the first row it logs for
    the view: no row of its own to write and delete; a one-table commit (the apply's common
    case) and a commit changing both tables and another view (its general case) stay exact."""
    conn.execute("create schema fr; create table fr.parent (id int primary key, region text);"
                 "create table fr.child (id int primary key, parent_id int, qty int)")
    conn.execute("insert into fr.parent select i, 'r' || (i % 3) from generate_series(1, 9) i")
    conn.execute("insert into fr.child select i, 1 + i % 9, i from generate_series(1, 40) i")
    deploy_text(module_db, "fr_view", FIRST)
    deploy_text(module_db, "fr_other", "select c.parent_id, sum(c.qty) as qty from fr.child c "
                "group by c.parent_id")
    suffix = conn.execute("select suffix from tidemark.views where name = 'fr_view'").fetchone()
    log = f'tidemark_state."{suffix[0]}__l1"'
    rows = f"select __tm_sign, __tm_first from {log} where __tm_tx = pg_current_xact_id()"
    with conn.transaction():
        conn.execute("update fr.child set qty = qty + 1 where id = 3")
        assert sorted(conn.execute(rows).fetchall()) == [(-1, True), (1, False)]
        conn.execute("insert into fr.child values (100, 1, 5), (101, 2, 6)")
        logged = conn.execute(rows).fetchall()
        assert len(logged) == 4 and sum(1 for _, first in logged if first) == 1
    assert_equal(conn, "fr_view", FIRST)
    for _ in range(3):  # one table, one view: the common case, several times in a session
        conn.execute("update fr.child set qty = qty * 2 where id = 5")
        conn.execute("delete from fr.child where id = (select min(id) from fr.child)")
        assert_equal(conn, "fr_view", FIRST)
    with conn.transaction():  # both tables and two views: the general case
        conn.execute("update fr.parent set region = 'moved' where id = 2")
        conn.execute("update fr.child set qty = 0 where parent_id = 2")
    assert_equal(conn, "fr_view", FIRST)
    assert conn.execute(f"select count(*) from {log} where __tm_tx <> '0'").fetchone() == (0,)


HOT = """select p.region, count(*) as n, sum(c.qty) as qty, max(c.qty) as top
from hot.parent p join hot.child c on c.parent_id = p.id group by p.region"""


def test_a_group_update_is_hot_and_empty_groups_go(module_db: str,
                                                   conn: psycopg.Connection) -> None:
    """A commit's update of its group changes no indexed column of the state, so it is HOT (no
    index on ``__count``: under contention every commit updated a hot group non-HOT, each
    version a new entry in the keys index); groups whose count falls to zero are still
    deleted, by the row ids the apply returns (also in a statement that empties some groups
    and changes others, and in a large one)."""
    state = parents_and_children(module_db, conn, "hot", "i % 4", 8, 40, HOT)
    counts = (f"select pg_stat_get_xact_tuples_updated('{state}'::regclass), "
              f"pg_stat_get_xact_tuples_hot_updated('{state}'::regclass)")
    with conn.transaction():  # SET CONSTRAINTS ... IMMEDIATE runs the apply now: its counts
        conn.execute("insert into hot.child values (100, 1, 5)")
        conn.execute("set constraints all immediate")
        assert conn.execute(counts).fetchone() == (1, 1)
    assert_equal(conn, "hot_view", HOT)
    conn.execute("delete from hot.child where parent_id in (1, 5)")  # r1 empties
    conn.execute("update hot.child set parent_id = 3 where parent_id in (2, 6)")  # r2 empties
    assert conn.execute("select count(*) from live.hot_view").fetchone() == (2,)
    assert_equal(conn, "hot_view", HOT)
    conn.execute("insert into hot.child select i, 4, i from generate_series(1000, 3500) i")
    conn.execute("delete from hot.child where parent_id in (4, 8)")  # large: planned afresh
    assert conn.execute("select count(*) from live.hot_view").fetchone() == (1,)
    assert_equal(conn, "hot_view", HOT)


def test_looped_is_the_upsert_of_the_statement_returning_its_rows() -> None:
    """:func:`looped` rebuilds a :func:`with_upsert` statement from its syntax tree: the other
    CTEs become the upsert's own WITH, which returns the rows ``__u`` held; a string literal
    holding the statement's own structure is left as it is."""
    upsert = ("INSERT INTO st AS s (k, __count, __dirty) SELECT k, count(*), false FROM __l0 "
              "WHERE k <> ', __u AS (INSERT' GROUP BY k ON CONFLICT (k) DO UPDATE SET "
              "__count = s.__count + excluded.__count")
    statement = with_upsert(["__m0 AS MATERIALIZED (DELETE FROM lg RETURNING k)",
                             "__l0 AS (SELECT k FROM __m0)"], upsert)
    plain = looped(statement, dirty=False)
    assert plain.startswith("WITH __m0 AS MATERIALIZED (DELETE FROM lg RETURNING k), __l0 AS ")
    assert "', __u AS (INSERT'" in plain and "array_agg" not in plain
    assert plain.endswith("RETURNING s.ctid, s.__count")
    assert looped(statement, dirty=True).endswith("RETURNING s.ctid, s.__count, s.__dirty")
