"""Statements that change several base tables of one view at once are still applied exactly."""

from __future__ import annotations

import psycopg

from streaming_views.compiler import looped, with_upsert
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


BIG = """select p.region, count(*) as n, sum(c.qty) as qty, avg(c.qty) as aq, min(c.qty) as mn
from big.parent p join big.child c on c.parent_id = p.id group by p.region"""


def test_large_statements_take_the_freshly_planned_path(module_db: str,
                                                        conn: psycopg.Connection):
    conn.execute("create schema big; create table big.parent (id int primary key, region text);"
                 "create table big.child (id int primary key, parent_id int, qty int)")
    conn.execute("insert into big.parent select i, 'r' || (i % 4) from generate_series(1, 50) i")
    deploy_text(module_db, "big_view", BIG)
    conn.execute("insert into big.child values (0, 1, 5)")  # first plan: a one-row delta
    conn.execute("insert into big.child select i, 1 + i %% 50, i %% 97 "
                 "from generate_series(1, 5000) i", ())
    assert_equal(conn, "big_view", BIG)
    conn.execute("update big.child set qty = qty + 1, parent_id = 1 + (parent_id + 7) %% 50",
                 ())
    assert_equal(conn, "big_view", BIG)
    conn.execute("update big.parent set region = 'all'")
    assert_equal(conn, "big_view", BIG)
    conn.execute("delete from big.child where id > 10")
    assert_equal(conn, "big_view", BIG)


def test_set_constraints_immediate_applies_mid_transaction(module_db: str,
                                                           conn: psycopg.Connection) -> None:
    """SET CONSTRAINTS ALL IMMEDIATE runs the commit-time maintenance at once; statements after
    it are still maintained (found by the differential generator, seed 504)."""
    text = "select t.g, count(*) as n, sum(t.v) as sv from im.t t group by t.g"
    conn.execute("create schema im; create table im.t (id int primary key, g int, v int)")
    deploy_text(module_db, "imm", text)
    with conn.transaction():
        conn.execute("insert into im.t values (1, 1, 10)")
        conn.execute("set constraints all immediate")
        conn.execute("insert into im.t values (2, 1, 20)")
        conn.execute("insert into im.t values (3, 2, 30)")
        conn.execute("set constraints all deferred")
        conn.execute("update im.t set v = v + 1")
    assert_equal(conn, "imm", text)
    assert conn.execute("select sum(sv) from live.imm").fetchone()[0] == 63


def test_immediate_constraints_and_a_statement_changing_two_joined_tables(
        module_db: str, conn: psycopg.Connection) -> None:
    """With constraints immediate, the first table's marker fires inside the statement, before
    the other table's changes are logged: the apply waits for the commit (found by the
    differential generator, seed 400199)."""
    text = ("select d.label, count(*) as n from im2.f f, im2.d d where d.w > 0 and d.k = f.k "
            "group by d.label")
    conn.execute("create schema im2; create table im2.d (k int primary key, label text, w int);"
                 "create table im2.f (id int primary key, k int, g int)")
    conn.execute("insert into im2.d values (1, 'a', 0), (2, 'b', 1); "
                 "insert into im2.f values (1, 1, 0), (2, 2, 0), (3, 1, 0)")
    deploy_text(module_db, "imm2", text)
    with conn.transaction():
        conn.execute("set constraints all immediate")
        conn.execute("with a as (update im2.d set w = w + 1 where k = 1 returning k) "
                     "insert into im2.f select 10, k, 0 from a")
        conn.execute("insert into im2.f values (4, 2, 0)")
    assert_equal(conn, "imm2", text)


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


def _parents_and_children(module_db: str, conn: psycopg.Connection, schema: str, region: str,
                          parents: int, children: int, view: str) -> str:
    """Tables ``<schema>.parent`` (region ``'r' || <region>`` of ``i``) and ``.child`` (spread
    over the parents, ``qty`` = ``id``) and the view ``<schema>_view``; its state table."""
    conn.execute(f"create schema {schema}; create table {schema}.parent (id int primary key, "
                 f"region text); create table {schema}.child (id int primary key, "
                 "parent_id int, qty int)")
    conn.execute(f"insert into {schema}.parent select i, 'r' || ({region}) "
                 f"from generate_series(1, {parents}) i")
    conn.execute(f"insert into {schema}.child select i, 1 + i % {parents}, i "
                 f"from generate_series(1, {children}) i")
    deploy_text(module_db, f"{schema}_view", view)
    suffix = conn.execute("select suffix from tidemark.views where name = %s",
                          (f"{schema}_view",)).fetchone()
    return f'tidemark_state."{suffix[0]}"'


HOT = """select p.region, count(*) as n, sum(c.qty) as qty, max(c.qty) as top
from hot.parent p join hot.child c on c.parent_id = p.id group by p.region"""


def test_a_group_update_is_hot_and_empty_groups_go(module_db: str,
                                                   conn: psycopg.Connection) -> None:
    """A commit's update of its group changes no indexed column of the state, so it is HOT (no
    index on ``__count``: under contention every commit updated a hot group non-HOT, each
    version a new entry in the keys index); groups whose count falls to zero are still
    deleted, by the row ids the apply returns (also in a statement that empties some groups
    and changes others, and in a large one)."""
    state = _parents_and_children(module_db, conn, "hot", "i % 4", 8, 40, HOT)
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


LOOP = """select p.region, count(*) as n, sum(c.qty) as qty, max(c.qty) as top
from lp.parent p join lp.child c on c.parent_id = p.id group by p.region"""


def test_the_apply_loop_deletes_empty_groups_and_recomputes(module_db: str,
                                                            conn: psycopg.Connection) -> None:
    """The apply of a small delta loops over the groups its upsert returned: the groups whose
    count fell to zero leave the state table itself (not only ``live.<name>``, which hides
    them), in one transaction emptying several groups of one or two tables, and a group whose
    max left is recomputed; a large delta does the same from its summary."""
    state = _parents_and_children(module_db, conn, "lp", "i", 6, 30, LOOP)
    groups = f"select count(*), count(*) filter (where __count <= 0) from {state}"
    assert conn.execute(groups).fetchone() == (6, 0)
    conn.execute("delete from lp.child where parent_id in (1, 2)")  # two groups empty
    assert conn.execute(groups).fetchone() == (4, 0)
    assert_equal(conn, "lp_view", LOOP)
    with conn.transaction():  # both tables: one group moves away, one empties
        conn.execute("update lp.parent set region = 'r4' where id = 3")
        conn.execute("delete from lp.child where parent_id = 5")
    assert conn.execute(groups).fetchone() == (2, 0)
    assert_equal(conn, "lp_view", LOOP)
    conn.execute("delete from lp.child where id = (select max(id) from lp.child "
                 "where parent_id = 4)")  # the group's max leaves: recomputed
    assert_equal(conn, "lp_view", LOOP)
    conn.execute("insert into lp.child select i, 6, i from generate_series(1000, 3500) i")
    conn.execute("delete from lp.child where parent_id in (4, 6)")  # large: from the summary
    assert conn.execute(groups).fetchone() == (1, 0)
    assert_equal(conn, "lp_view", LOOP)


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
