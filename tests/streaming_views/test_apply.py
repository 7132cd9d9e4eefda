"""The commit-time apply: a large delta planned afresh, SET CONSTRAINTS ALL IMMEDIATE (the apply
postponed to the commit when fired inside a statement), the loop over the groups its upsert
returned."""

from __future__ import annotations

import psycopg

from tests.streaming_views.conftest import assert_equal, deploy_text, parents_and_children

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


LOOP = """select p.region, count(*) as n, sum(c.qty) as qty, max(c.qty) as top
from lp.parent p join lp.child c on c.parent_id = p.id group by p.region"""


def test_the_apply_loop_deletes_empty_groups_and_recomputes(module_db: str,
                                                            conn: psycopg.Connection) -> None:
    """The apply of a small delta loops over the groups its upsert returned: the groups whose
    count fell to zero leave the state table itself (not only ``live.<name>``, which hides
    them), in one transaction emptying several groups of one or two tables, and a group whose
    max left is recomputed; a large delta does the same from its summary."""
    state = parents_and_children(module_db, conn, "lp", "i", 6, 30, LOOP)
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
