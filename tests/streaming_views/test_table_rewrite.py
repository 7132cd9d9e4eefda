"""Base-table changes that fire no trigger, and view files as users end them.

Before v24: ``ALTER TABLE ... ALTER COLUMN c SET EXPRESSION`` (a stored generated column) and
``ALTER COLUMN v TYPE <same type> USING ...`` rewrote the rows a view reads with no trigger, and
the view stayed stale with status ok; a view reading a virtual generated column (PostgreSQL 18)
deployed, then made every write to its table fail ("unexpected virtual generated column
reference"); ``verify`` of a view file ending with a ``--`` comment failed with a syntax error.
"""

from __future__ import annotations

import psycopg
import pytest

from streaming_views import verify
from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text

GENERATED = "select t.g, count(*) as n, sum(t.c) as sc from tr.t t group by t.g"
RETYPED = "select t.g, sum(t.x) as sx, max(t.x) as mx from tr.t t group by t.g"
PARTED = "select p.g, sum(p.v) as sv from tr.p p group by p.g"


def _version(conn: psycopg.Connection) -> int:
    return conn.info.server_version


@pytest.fixture
def tables(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("drop schema if exists tr cascade; create schema tr")
    stored = "generated always as (v + 1) stored" if _version(conn) >= 120000 else ""
    conn.execute(f"create table tr.t (id int primary key, g int, v int, x int, c int {stored})")
    conn.execute("insert into tr.t (id, g, v, x) select i, i % 3, i, i "
                 "from generate_series(1, 20) i")
    conn.execute("create table tr.p (id int, g int, v int) partition by range (id)")
    conn.execute("create table tr.p1 partition of tr.p for values from (0) to (10)")
    conn.execute("create table tr.p2 partition of tr.p for values from (10) to (100)")
    conn.execute("insert into tr.p select i, i % 2, i from generate_series(1, 30) i")
    return conn


def test_set_expression_of_a_stored_generated_column_rebuilds_the_view(
        tables: psycopg.Connection, module_db: str) -> None:
    conn = tables
    if _version(conn) < 170000:
        pytest.skip("ALTER COLUMN ... SET EXPRESSION is PostgreSQL 17+")
    deploy_text(module_db, "generated", GENERATED)
    conn.execute("alter table tr.t alter column c set expression as (v * 100)")
    assert_equal(conn, "generated", GENERATED)
    conn.execute("insert into tr.t (id, g, v) values (50, 1, 5)")
    assert_equal(conn, "generated", GENERATED)
    assert all(r.ok for r in verify(module_db, "generated"))


def test_alter_type_using_to_the_same_type_rebuilds_the_view(tables: psycopg.Connection,
                                                             module_db: str) -> None:
    conn = tables
    deploy_text(module_db, "retyped", RETYPED)
    deploy_text(module_db, "parted", PARTED)
    with conn.transaction():
        conn.execute("alter table tr.t alter column x type int using x * 2")
        conn.execute("update tr.t set x = x + 1 where id < 5")
    assert_equal(conn, "retyped", RETYPED)
    conn.execute("alter table tr.p alter column v type int using -v")  # every partition
    assert_equal(conn, "parted", PARTED)
    conn.execute("delete from tr.p where id in (3, 15)")
    assert_equal(conn, "parted", PARTED)
    with conn.transaction():  # a rollback leaves the view as it was
        conn.execute("alter table tr.t alter column x type int using 0")
        conn.execute("rollback")
    assert_equal(conn, "retyped", RETYPED)


def test_virtual_generated_column_is_refused_and_writes_go_on(tables: psycopg.Connection,
                                                              module_db: str) -> None:
    conn = tables
    if _version(conn) < 180000:
        pytest.skip("virtual generated columns are PostgreSQL 18+")
    conn.execute("alter table tr.t add column w int generated always as (v * 2) virtual")
    text = "select t.w, count(*) as n from tr.t t group by t.w"
    with pytest.raises(UnsupportedViewError) as info:
        deploy_text(module_db, "virtual", "-- doubled\n" + text)
    err = info.value
    assert (err.construct, err.line, err.column) == (
        "virtual generated column tr.t.w", 2, 8), str(err)
    assert "(v * 2)" in (err.rewrite or "")
    rewritten = "select t.v * 2 as w, count(*) as n from tr.t t group by 1"
    deploy_text(module_db, "virtual", rewritten)
    conn.execute("update tr.t set v = v + 3 where g = 1")  # never fails because of a view
    conn.execute("insert into tr.t (id, g, v) values (60, 0, 1)")
    extra = conn.execute(f"(select * from live.virtual except all {text}) union all "
                         f"({text} except all select * from live.virtual)").fetchall()
    assert not extra


def test_view_file_ending_with_a_comment_verifies(tables: psycopg.Connection,
                                                  module_db: str) -> None:
    text = "-- per g\nselect t.g, count(*) as n from tr.t t group by t.g; -- the end\n"
    deploy_text(module_db, "commented", text)
    tables.execute("insert into tr.t (id, g, v) values (70, 2, 2)")
    assert [r.ok for r in verify(module_db, "commented")] == [True]
    text = "select t.g, count(*) as n from tr.t t group by t.g -- no semicolon"
    deploy_text(module_db, "commented", text)
    assert [r.ok for r in verify(module_db, "commented")] == [True]
