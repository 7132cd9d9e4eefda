"""Issue 11, class 2: sum/avg over special values and display scales, exact after deletes.

Checked with the oracle and with the text of every sum/avg (the display scale of a numeric sum
is the largest scale of its inputs, which EXCEPT ALL's numeric equality would not see)."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text

NUMERIC = """select t.g, sum(t.x) as sx, avg(t.x) as ax, sum(t.c) as sc, avg(t.c) as ac,
       avg(t.a / nullif(t.b, 0)) as q, sum(distinct t.c) as sdc, avg(distinct t.c) as adc,
       count(*) as n
from r.t t group by t.g"""

GLOBAL = "select sum(t.x) as sx, avg(t.x) as ax, count(t.x) as n from r.t t"


def text_rows(conn: psycopg.Connection, relation: str) -> list[tuple]:
    return sorted(conn.execute(f"select g::text, sx::text, ax::text, sc::text, ac::text, q::text,"
                               f" sdc::text, adc::text from {relation}").fetchall(),
                  key=repr)


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema r; create table r.t (id int primary key, g int, x numeric, "
                 "c numeric(10, 2), a numeric, b numeric)")
    assert deploy_text(module_db, "nums", NUMERIC) == "created"
    assert deploy_text(module_db, "nums_global", GLOBAL) == "created"
    return module_db


def check(conn: psycopg.Connection) -> None:
    assert_equal(conn, "nums", NUMERIC)
    assert_equal(conn, "nums_global", GLOBAL)
    query = f"({NUMERIC}) as q"
    assert text_rows(conn, "live.nums") == text_rows(conn, query)


def test_nan_and_infinity_inserted_then_deleted(db: str, conn: psycopg.Connection) -> None:
    conn.execute("truncate r.t")
    conn.execute("insert into r.t values (1, 1, 1, 1, 1, 3), (2, 1, 2, 2, 2, 3)")
    check(conn)
    for special in ("NaN", "Infinity", "-Infinity"):
        conn.execute("insert into r.t values (3, 1, %s, 'NaN', 1, 1)", (special,))
        check(conn)
        conn.execute("delete from r.t where id = 3")
        check(conn)
        assert conn.execute("select sx from live.nums where g = 1").fetchone()[0] == 3
    conn.execute("insert into r.t values (4, 1, 'Infinity', 1, 1, 1), (5, 1, '-Infinity', 1, 1, 1)")
    check(conn)  # +Infinity and -Infinity together: NaN, as the query
    conn.execute("delete from r.t where id in (4, 5)")
    check(conn)


def test_avg_scale_follows_the_rows_left(db: str, conn: psycopg.Connection) -> None:
    conn.execute("truncate r.t")
    conn.execute("insert into r.t values (1, 1, 1, 1, 1, 3), (2, 1, 1, 1, 2, 7), "
                 "(3, 1, 2.00000000000000000000, 2, 1, 9), (4, 2, 0.5, 0.5, 10, 3)")
    check(conn)
    conn.execute("delete from r.t where id = 3")  # the row with 20 decimals leaves group 1
    check(conn)
    assert conn.execute("select ax::text from live.nums where g = 1").fetchone()[0] \
        == "1.00000000000000000000"
    conn.execute("insert into r.t values (5, 1, 2, 2, 5, 6)")
    check(conn)
    assert conn.execute("select ax::text from live.nums where g = 1").fetchone()[0] \
        == "1.3333333333333333"
    conn.execute("update r.t set x = x + 0.001 where id = 1")
    check(conn)
    conn.execute("update r.t set x = x - 0.001 where id = 1")
    check(conn)
    conn.execute("delete from r.t where g = 1")
    check(conn)


FIXED = """select t.g, sum(t.c) as sc, avg(t.c) as ac, count(t.c) as n, sum(t.c) filter
       (where t.b > 0) as sf
from r.t t group by t.g"""


def test_nan_of_a_fixed_scale_numeric_is_kept_in_the_sum(db: str,
                                                         conn: psycopg.Connection) -> None:
    """numeric(10, 2) keeps no NaN counter: the sum holds the NaN, and a delta whose sum is NaN
    (a NaN row added or removed, in a group new to the state too) recomputes the group."""
    conn.execute("truncate r.t")
    assert deploy_text(db, "fixed", FIXED) in {"created", "unchanged"}
    cols = {r[0] for r in conn.execute(
        "select attname from pg_attribute a join tidemark.views v on a.attrelid = "
        "('tidemark_state.' || quote_ident(v.suffix))::regclass where v.name = 'fixed' "
        "and a.attnum > 0").fetchall()}
    assert not any(c.endswith("_nan") for c in cols), cols

    def fixed() -> None:
        assert_equal(conn, "fixed", FIXED)
        rows = "select g, sc::text, ac::text, n, sf::text from {} order by g"
        assert conn.execute(rows.format("live.fixed")).fetchall() == conn.execute(
            rows.format(f"({FIXED}) as q")).fetchall()

    conn.execute("insert into r.t values (1, 1, 0, 1.5, 0, 1), (2, 1, 0, 2.25, 0, 0)")
    fixed()
    conn.execute("insert into r.t values (3, 1, 0, 'NaN', 0, 1)")
    fixed()
    conn.execute("update r.t set c = c + 1 where id = 1")  # the group stays NaN
    fixed()
    conn.execute("delete from r.t where id = 3")  # finite again
    fixed()
    with conn.transaction():  # a new group: NaN added and removed in one transaction
        conn.execute("insert into r.t values (4, 2, 0, 'NaN', 0, 1), (5, 2, 0, 7, 0, 1)")
        conn.execute("delete from r.t where id = 4")
    fixed()
    with conn.transaction():
        conn.execute("insert into r.t values (6, 3, 0, 'NaN', 0, 1), (7, 3, 0, 'NaN', 0, -1)")
        conn.execute("update r.t set c = 1 where id = 6")
    fixed()
    conn.execute("update r.t set c = 'NaN' where g = 3")
    fixed()
    conn.execute("update r.t set g = 1 where g = 3")  # NaN rows move group
    fixed()
    conn.execute("delete from r.t where c = 'NaN'")
    fixed()
    conn.execute("insert into r.t select i, i % 4, 0, case when i % 50 = 0 then 'NaN' else "
                 "i / 8.0 end, 0, i % 3 - 1 from generate_series(100, 3100) i")  # a large one
    fixed()
    conn.execute("delete from r.t where id between 100 and 3100 and c <> 'NaN'")
    fixed()
    conn.execute("delete from r.t")
    fixed()


INTERVALS = """select t.g, sum(t.iv) as s, avg(t.iv) as a, count(t.iv) as n
from r.iv t group by t.g"""


def test_infinite_intervals(db: str, conn: psycopg.Connection) -> None:
    if conn.info.server_version < 170000:
        pytest.skip("infinite intervals exist from PostgreSQL 17")
    conn.execute("create table r.iv (id int primary key, g int, iv interval)")
    assert deploy_text(db, "ivs", INTERVALS) == "created"
    conn.execute("insert into r.iv values (1, 1, '1 day'), (2, 1, '2 hours')")
    conn.execute("insert into r.iv values (3, 1, 'infinity')")
    assert_equal(conn, "ivs", INTERVALS)
    conn.execute("delete from r.iv where id = 3")  # was: 22008 interval out of range
    assert_equal(conn, "ivs", INTERVALS)
    conn.execute("insert into r.iv values (4, 1, '-infinity'), (5, 2, 'infinity')")
    assert_equal(conn, "ivs", INTERVALS)
    conn.execute("insert into r.iv values (6, 1, 'infinity')")
    for relation in ("live.ivs", f"({INTERVALS}) as q"):
        with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
            conn.execute(f"select * from {relation}").fetchall()
    conn.execute("delete from r.iv where id in (4, 6)")
    assert_equal(conn, "ivs", INTERVALS)
    assert conn.execute("select s::text from live.ivs where g = 1").fetchone()[0] \
        == "1 day 02:00:00"


def test_infinite_interval_error_even_in_a_group_having_excludes(db: str,
                                                                 conn: psycopg.Connection):
    """PostgreSQL finalises every aggregate of a group before HAVING: +infinity and -infinity in
    a group HAVING leaves out still make the query fail; so must reading the view (found by the
    differential generator, seed 200019)."""
    if conn.info.server_version < 170000:
        pytest.skip("infinite intervals exist from PostgreSQL 17")
    text = ("select t.g, avg(t.iv) as a from r.iv2 t group by t.g "
            "having count(*) <> 2")
    conn.execute("create table r.iv2 (id int primary key, g int, iv interval)")
    assert deploy_text(db, "ivs_having", text) == "created"
    conn.execute("insert into r.iv2 values (1, 1, '1 day'), (2, 2, 'infinity'), "
                 "(3, 2, '-infinity')")
    for relation in ("live.ivs_having", f"({text}) as q"):
        with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
            conn.execute(f"select * from {relation}").fetchall()
    conn.execute("delete from r.iv2 where id = 3")
    assert_equal(conn, "ivs_having", text)


def test_aggregates_over_domains(db: str, conn: psycopg.Connection) -> None:
    """A sum over a domain ``CHECK (value >= 0)`` was kept in the domain: deleting a row made
    the kept sum's delta negative and every DELETE on the table failed inside the view's
    maintenance; a domain over numeric also lost the NaN/scale rules and one over float8 passed
    the float check. Aggregates now work on the domain's base type, as PostgreSQL's do."""
    conn.execute("create domain r.pos as numeric check (value >= 0); "
                 "create domain r.pos2 as r.pos; create domain r.small as int check (value < 10);"
                 "create domain r.fl as float8; "
                 "create table r.dm (id int primary key, g int, p r.pos, p2 r.pos2, s r.small, "
                 "f r.fl)")
    text = """select t.g, sum(t.p) as sp, avg(t.p) as ap, sum(t.p2) as sp2, sum(t.s) as ss,
       avg(t.s) as as_, sum(distinct t.s) as sds, min(t.p) as mp, max(t.p2) as xp2,
       count(distinct t.p2) as dp2
from r.dm t group by t.g"""
    assert deploy_text(db, "domains", text) == "created"
    conn.execute("insert into r.dm values (1, 1, 1.5, 2.25, 9, 0.5), (2, 1, 'NaN', 3, 1, 1), "
                 "(3, 2, 0.125, 0, 0, 2), (4, 1, 2.00000, 1.0, 9, 3)")
    assert_equal(conn, "domains", text)
    conn.execute("delete from r.dm where id in (2, 4)")  # was: violates check constraint
    assert_equal(conn, "domains", text)
    assert conn.execute("select sp::text, ap::text from live.domains where g = 1").fetchone() \
        == conn.execute("select sum(p)::text, avg(p)::text from r.dm where g = 1").fetchone()
    conn.execute("update r.dm set p = p + 1, s = s - 1")
    conn.execute("delete from r.dm where g = 2")
    assert_equal(conn, "domains", text)
    with pytest.raises(UnsupportedViewError, match="double precision"):
        deploy_text(db, "domain_float", "select t.g, sum(t.f) as s from r.dm t group by t.g")
