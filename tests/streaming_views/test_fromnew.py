"""A transaction whose only logged row for a view is one INSERTed or DELETEd row: the apply
reads that row from its trigger's ``NEW`` (the token `` name/j! `` in ``tidemark.pending``),
and every other transaction — a second write, a marker, a savepoint, several views, an
immediate apply — takes the log, exactly."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.deploy import deploy_embedded
from tests.streaming_views.conftest import assert_equal, deploy_text

JOIN = """select d.region, count(*) as n, sum(f.amount) as total, max(f.amount) as top,
       min(f.note) as note
from nw.fact f join nw.dim d on d.k = f.k
group by d.region"""
# dim.k is not unique here: one fact row meets two dimension rows of the same region
FANOUT = """select d.region, count(*) as n, sum(f.amount) as total
from nw.fact f join nw.dup d on d.k = f.k
group by d.region"""
SINGLE = "select f.k, count(*) as n, sum(f.amount) as total from nw.fact f group by f.k"
VIEWS = {"nw_join": JOIN, "nw_fanout": FANOUT, "nw_single": SINGLE}
ACTIVE = {"view": ""}  # the one view deployed: the one-row branch needs no other view pending


@pytest.fixture(scope="module", params=list(VIEWS))
def db(module_db: str, conn: psycopg.Connection,
       request: pytest.FixtureRequest) -> psycopg.Connection:
    """``nw.fact`` joined to ``nw.dim`` (unique key) and ``nw.dup`` (duplicated key), and ONE
    view of :data:`VIEWS` over them (each in turn): with two views on ``nw.fact`` a write
    would note both, and the apply would take the log."""
    deploy_embedded(module_db, [], prune=True)
    conn.execute("drop schema if exists nw cascade")
    conn.execute("create schema nw; create table nw.dim (k int primary key, region text); "
                 "create table nw.dup (k int, region text); "
                 "create table nw.fact (id int primary key, k int, amount numeric(10, 2), "
                 "note text)")
    conn.execute("insert into nw.dim select i, 'r' || (i % 3) from generate_series(0, 9) i")
    conn.execute("insert into nw.dup select i % 5, 'r' || (i % 2) from generate_series(0, 19) i")
    conn.execute("insert into nw.fact select i, i % 10, i, 'n' || i from generate_series(1, 30) i")
    ACTIVE["view"] = request.param
    deploy_text(module_db, request.param, VIEWS[request.param])
    return conn


def _pending(conn: psycopg.Connection) -> str:
    return conn.execute("select coalesce(current_setting('tidemark.pending', true), '')"
                        ).fetchone()[0]


def _lone(conn: psycopg.Connection) -> bool:
    """Whether ``tidemark.pending`` notes the view deployed as one lone row (its only token is
    `` name/0! ``, the apply's one-row branch)."""
    return _pending(conn).split() == [f"{ACTIVE['view']}/0!"]


def _expected(lone: list[bool]) -> bool:
    """The value of ``lone`` (one per view of :data:`VIEWS`) for the view deployed."""
    return lone[list(VIEWS).index(ACTIVE["view"])]


def _check(conn: psycopg.Connection) -> None:
    assert_equal(conn, ACTIVE["view"], VIEWS[ACTIVE["view"]])


def test_a_lone_one_row_write_is_noted_as_one_row_and_applied_from_new(
        db: psycopg.Connection) -> None:
    """A one-row INSERT or DELETE alone in its transaction notes `` view/0! ``; the view then
    equals its query — also where the join fans the row out to several rows of one group."""
    conn = db
    for stmt in ("insert into nw.fact values (100, 3, 7.5, 'a')",
                 "insert into nw.fact values (101, 1, 2.25, null)",  # dup: 4 rows, 2 groups
                 "delete from nw.fact where id = 100",
                 "delete from nw.fact where id = 5",  # the group's max and min leave
                 "insert into nw.fact values (102, 42, 1, 'z')"):  # meets no dimension row
        with conn.transaction():
            conn.execute(stmt)
            assert _lone(conn), stmt
        _check(conn)


def test_any_second_row_makes_the_delta_the_logs(db: psycopg.Connection) -> None:
    """A second write in the transaction (same table, the other table, a multi-row statement)
    turns the token plain: the apply reads the log."""
    conn = db
    cases = [(["insert into nw.fact values (110, 2, 1, 'b')",
               "insert into nw.fact values (111, 2, 2, 'c')"], [False, False, False]),
             (["insert into nw.fact values (112, 4, 3, 'd')",  # the dimension: nw_join only
               "update nw.dim set region = 'r9' where k = 4"], [False, True, True]),
             (["update nw.dim set region = 'r1' where k = 4",
               "insert into nw.fact values (113, 4, 3, 'd')"], [False, True, True]),
             (["delete from nw.fact where id = 112",
               "insert into nw.fact select 120 + i, i, i, 'm' from generate_series(0, 3) i"],
              [False, False, False]),
             (["insert into nw.fact select 130 + i, i, i, 'm' from generate_series(0, 2) i"],
              [False, False, False])]
    for stmts, lone in cases:
        with conn.transaction():
            for stmt in stmts:
                conn.execute(stmt)
            assert _lone(conn) == _expected(lone), stmts
        _check(conn)


def test_savepoints_and_immediate_applies_keep_one_row_exact(db: psycopg.Connection) -> None:
    """A rolled-back second write leaves the first alone (its token comes back); ``SET
    CONSTRAINTS ALL IMMEDIATE`` applies the lone row at once, and the next write is a new
    lone row; a rolled-back first write leaves nothing."""
    conn = db
    with conn.transaction():
        conn.execute("insert into nw.fact values (140, 6, 4, 'e')")
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("insert into nw.fact values (141, 6, 5, 'f')")
            assert not _lone(conn)
            conn.execute("select 1 / 0")
        assert _lone(conn)
    _check(conn)
    with conn.transaction():
        conn.execute("insert into nw.fact values (142, 7, 6, 'g')")
        conn.execute("set constraints all immediate")
        conn.execute("set constraints all deferred")
        _check(conn)
        conn.execute("delete from nw.fact where id = 142")
        assert _lone(conn)
    _check(conn)
    with conn.transaction():
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("insert into nw.fact values (143, 8, 7, 'h')")
            conn.execute("select 1 / 0")
        assert _pending(conn) == ""
        conn.execute("update nw.dim set region = 'r2' where k = 8")
    _check(conn)


def test_a_write_inside_a_trigger_after_an_immediate_apply_is_postponed_exactly(
        db: psycopg.Connection) -> None:
    """After ``SET CONSTRAINTS ALL IMMEDIATE`` a lone row's apply fires inside the statement
    that logged it (trigger depth 2), before the statement notes the row, and postpones itself
    with a marker: the note says one row, but the commit's apply, fired by the marker, reads
    the log (the row and the marker), not ``NEW`` (the marker)."""
    conn = db
    conn.execute("create table nw.audit (id int)")
    conn.execute("create function nw.copy() returns trigger language plpgsql as $$ begin "
                 "insert into nw.fact values (new.id + 1000, 9, 11, 'trig'); return null; end $$")
    conn.execute("create trigger copy after insert on nw.audit for each row "
                 "execute function nw.copy()")
    with conn.transaction():
        conn.execute("set constraints all immediate")
        conn.execute("insert into nw.audit values (150)")
        assert _lone(conn)
    _check(conn)
    assert conn.execute("select count(*) from nw.fact where id = 1150").fetchone()[0] == 1
