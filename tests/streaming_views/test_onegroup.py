"""A lone one-row INSERT or DELETE whose delta meets at most one row of each other table — a
single-table view, or a join on a unique key of the other table — is upserted without an
aggregate (:mod:`streaming_views.onegroup`); the unique key is learnt at deploy and the view is
reported broken when it goes (dropped, made deferrable, or a child table added)."""

from __future__ import annotations

import re

import psycopg
import pytest

from streaming_views import verify
from streaming_views.status import list_views
from tests.streaming_views.conftest import assert_all_equal, deploy_text

KEYED = """select d.region, count(*) as n, sum(f.amount) as total, max(f.amount) as top,
       min(f.note) as note, bool_and(f.flag) as all_flag, avg(f.amount) as mean,
       count(f.note) as notes
from og.fact f join og.dim d on d.k = f.k
group by d.region"""
# og.pair's unique key is (a, b): the join names both columns
PAIRED = """select p.region, count(*) as n, sum(f.amount) as total
from og.fact f join og.pair p on p.a = f.k and p.b = f.k2
group by p.region"""
# only a of (a, b): one fact row can meet two pair rows of one region
HALF = """select p.region, count(*) as n, sum(f.amount) as total
from og.fact f join og.pair p on p.a = f.k
group by p.region"""
# a deferrable unique key proves nothing while the transaction runs
DEFERRED = """select d.region, count(*) as n, sum(f.amount) as total
from og.fact f join og.lazy d on d.k = f.k
group by d.region"""
SINGLE = """select f.k, count(*) as n, sum(f.amount) as total, max(f.amount) as top
from og.fact f where f.amount > 0 group by f.k"""
GLOBAL = "select count(*) as n, sum(f.amount) as total, min(f.amount) as low from og.fact f"
# a unique index (no constraint): DROP INDEX is seen by the guard's sql_drop trigger only
INDEXED = """select u.region, count(*) as n, sum(f.amount) as total
from og.fact f join og.uniq u on u.k = f.k group by u.region"""
# one base table in two roles: a fact row meets every fact row of its k2
SELF = """select f.k, count(*) as n, sum(f2.amount) as total
from og.fact f join og.fact f2 on f2.k = f.k2 and f2.id <> f.id group by f.k"""
# og.fact behind a FROM subquery (inlined: a single-table view)
INLINE = """select f.k, count(*) as n, sum(f.amount) as total
from (select x.k, x.amount from og.fact x where x.k > 0) f group by f.k"""
VIEWS = {"og_keyed": KEYED, "og_paired": PAIRED, "og_half": HALF, "og_deferred": DEFERRED,
         "og_single": SINGLE, "og_global": GLOBAL, "og_indexed": INDEXED, "og_self": SELF,
         "og_inline": INLINE}
# each view reads its own copy of og.fact (og.<view name>): a one-row write takes the apply's
# one-row branch only when no other view is pending in the transaction
TEXTS = {name: text.replace("og.fact", f"og.{name}") for name, text in VIEWS.items()}
WITHOUT_AGGREGATE = {"og_keyed", "og_paired", "og_single", "og_global", "og_inline",
                     "og_indexed"}


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema og; "
                 "create table og.dim (k int primary key, region text); "
                 "create table og.pair (a int, b int, region text, unique (a, b)); "
                 "create table og.uniq (k int, region text); "
                 "create unique index uniq_k on og.uniq (k); "
                 "create table og.lazy (k int unique deferrable initially immediate, "
                 "region text); "
                 "create table og.fact (id int primary key, k int, k2 int, "
                 "amount numeric(10, 2), note text, flag boolean)")
    conn.execute("insert into og.dim select i, 'r' || (i % 3) from generate_series(0, 9) i; "
                 "insert into og.lazy select i, 'r' || (i % 2) from generate_series(0, 9) i; "
                 "insert into og.uniq select i, 'r' || (i % 2) from generate_series(0, 9) i; "
                 "insert into og.pair select i % 10, i / 10, 'r' || (i % 2) "
                 "from generate_series(0, 29) i")
    conn.execute("insert into og.fact select i, i % 10, i % 3, i, 'n' || i, i % 4 <> 0 "
                 "from generate_series(1, 30) i")
    for name, text in TEXTS.items():
        conn.execute(f"create table og.{name} (like og.fact including all); "
                     f"insert into og.{name} select * from og.fact")
        deploy_text(module_db, name, text)
    return module_db


def _each(conn: psycopg.Connection, stmt: str) -> None:
    """Run ``stmt`` on every view's copy of og.fact, each in its own transaction."""
    for name in VIEWS:
        conn.execute(stmt.replace("og.fact", f"og.{name}"))


def _lone_statement(conn: psycopg.Connection, name: str) -> str:
    """The statement the view's apply runs for a lone one-row write of its table 0."""
    suffix = conn.execute("select suffix from tidemark.views where name = %s and "
                          "target = 'embedded'", (name,)).fetchone()[0]
    body = conn.execute("select prosrc from pg_proc where proname = %s",
                        (f"{suffix}__apply",)).fetchone()[0]
    found = re.search(r"IF NEW\.__tm_sign <> 0 THEN\n\s*(FOR [^\n]*)", body)
    assert found is not None, name
    return found.group(1)


def test_the_lone_row_is_upserted_without_an_aggregate_where_it_meets_one_row(
        db: str, conn: psycopg.Connection) -> None:
    for name in VIEWS:
        statement = _lone_statement(conn, name)
        grouped = " GROUP BY " in statement or "sum(" in statement.lower()
        assert grouped == (name not in WITHOUT_AGGREGATE), name
    keys = dict(conn.execute("select name, jsonb_path_query_array(used_columns, "
                             "'$[*][*] ? (exists(@.key)).name') from tidemark.views "
                             "where target = 'embedded'").fetchall())
    assert keys["og_keyed"] == ["k"] and sorted(keys["og_paired"]) == ["a", "b"]
    assert keys["og_half"] == keys["og_deferred"] == keys["og_single"] == []


def test_lone_writes_without_the_aggregate_stay_exact(db: str, conn: psycopg.Connection) -> None:
    """New groups, a group's last row leaving, its max and min leaving, NULLs, a row meeting
    no dimension row or failing WHERE, a fan-out (og_half), and writes that are not lone."""
    statements = [
        "insert into og.fact values (100, 3, 1, 7.5, 'a', true)",
        "insert into og.fact values (101, 11, 0, 2.25, null, null)",  # meets no dim row
        "insert into og.fact values (102, 4, 1, -1, null, false)",  # fails og_single's WHERE
        "delete from og.fact where id = 30",  # the largest amount: max leaves
        "delete from og.fact where id = 1",
        "insert into og.fact values (103, 42, 0, 3, 'x', true)",  # a new og_single group
        "delete from og.fact where id = 103",  # ... and its last row leaves
        "insert into og.fact values (104, 5, 2, null, 'b', true)",
        "delete from og.fact where id = 104",
    ]
    for stmt in statements:
        _each(conn, stmt)
        assert_all_equal(conn, TEXTS)
    for name in VIEWS:
        with conn.transaction():  # two rows of one group: the log and the aggregate
            conn.execute(f"insert into og.{name} values (105, 6, 0, 1, 'c', true)")
            conn.execute(f"insert into og.{name} values (106, 6, 0, 2, 'd', false)")
    _each(conn, "insert into og.fact select 110 + i, 7, 1, i, 'e', true "
                "from generate_series(0, 3) i")
    conn.execute("update og.dim set region = 'r9' where k = 7")
    assert_all_equal(conn, TEXTS)
    _each(conn, "delete from og.fact where id = 105")
    assert_all_equal(conn, TEXTS)


def _status(db: str) -> dict[str, str]:
    return {s.name: s.status for s in list_views(db)}


@pytest.mark.parametrize(("ddl", "undo"), [
    ("alter table og.dim drop constraint dim_pkey",
     "alter table og.dim add primary key (k)"),
    ("alter table og.dim drop constraint dim_pkey, "
     "add constraint dim_pkey primary key (k) deferrable",
     "alter table og.dim drop constraint dim_pkey, add primary key (k)"),
    ("create table og.dim_child () inherits (og.dim)", "drop table og.dim_child"),
])
def test_a_unique_key_it_relies_on_going_breaks_the_view(
        db: str, conn: psycopg.Connection, ddl: str, undo: str) -> None:
    """On main no view relied on a key; here og_keyed does, so losing it breaks the view
    (named, with the cause), writes keep working, the views that do not rely on it stay, and
    deploy repairs it."""
    conn.execute("create index dim_region on og.dim (region); drop index og.dim_region")
    assert _status(db)["og_keyed"] == "ok"  # another index of the table: nothing
    conn.execute(ddl)  # the DDL succeeds
    _each(conn, "insert into og.fact values (120, 2, 0, 4, 'k', true)")  # so do writes
    with pytest.raises(psycopg.Error, match=r"(?s)live view og_keyed .*column k of og\.dim "
                                             r".*unique key.*tidemark views deploy"):
        conn.execute("select * from live.og_keyed").fetchall()
    status = _status(db)
    assert status["og_keyed"].startswith("broken")
    assert all(status[name] == "ok" for name in VIEWS if name != "og_keyed")
    conn.execute(undo)
    assert deploy_text(db, "og_keyed", TEXTS["og_keyed"]) == "repaired"
    _each(conn, "delete from og.fact where id = 120")
    assert_all_equal(conn, TEXTS)


def test_without_the_guard_verify_finds_a_dropped_key(db: str,
                                                      conn: psycopg.Connection) -> None:
    conn.execute("alter event trigger tidemark_live_sql_drop disable")
    try:
        conn.execute("alter table og.pair drop constraint pair_a_b_key")
    finally:
        conn.execute("alter event trigger tidemark_live_sql_drop enable")
    [result] = verify(db, "og_paired")
    assert not result.ok and "column" in (result.problem or "") \
        and "no longer in a unique key" in (result.problem or "")
    conn.execute("alter table og.pair add unique (a, b)")
    assert deploy_text(db, "og_paired", TEXTS["og_paired"]) == "repaired"
    _each(conn, "insert into og.fact values (121, 1, 0, 4, 'k', true)")
    assert_all_equal(conn, TEXTS)


def test_a_dropped_unique_index_breaks_the_view(db: str, conn: psycopg.Connection) -> None:
    conn.execute("drop index og.uniq_k")
    assert _status(db)["og_indexed"].startswith("broken")
    conn.execute("create unique index uniq_k on og.uniq (k)")
    assert deploy_text(db, "og_indexed", TEXTS["og_indexed"]) == "repaired"
    _each(conn, "insert into og.fact values (122, 2, 0, 4, 'k', true)")
    assert_all_equal(conn, TEXTS)
