"""A division that can meet a 0 for some written row is refused at deploy: the engine computes
row-level expressions inside the writer's statement, so the write (on landing: ingestion) would
fail instead of the view. Divisions of aggregates in an aggregate view's outputs raise for the
reader, as the query does; a view over such a view reads them in the writer's commit, so it is
refused. Found by the differential generator (seed 2400329: a view over a global aggregate
``round(count(*) filter (...)::numeric / count(*), 4)`` on an empty table failed to deploy with
a raw 'division by zero'); before the fix each refused view below deployed and then made
``insert ... values (.., b = 0)`` fail with DivisionByZero."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema z; create table z.t (id int primary key, k int, a int, b int);"
                 "create table z.d (k int primary key, w int)")
    conn.execute("insert into z.t values (1, 1, 10, 2), (2, 2, 5, 1); insert into z.d values "
                 "(1, 3), (2, 0)")
    return module_db


ROW_LEVEL = {  # the view, and where the error points (its operator or div())
    "bag output": ("select t.id, t.a / t.b as r from z.t t", "/"),
    "where": ("select t.id from z.t t where t.a / t.b > 1", "/"),
    "group key": ("select t.a % t.b as g, count(*) as n from z.t t group by 1", "%"),
    "aggregate argument": ("select t.k, sum(t.a / t.b) as s from z.t t group by t.k", "/"),
    "filter": ("select t.k, count(*) filter (where t.a / t.b > 1) as n from z.t t group by t.k",
               "/"),
    "join condition": ("select t.id, d.w from z.t t join z.d d on t.a / d.w = t.k", "/"),
    "div()": ("select t.id, div(t.a, t.b) as q from z.t t", "div("),
    "from subquery": ("select x.q, count(*) as n from (select t.k, t.a / t.b as q from z.t t) x "
                      "group by 1", "/"),
}


@pytest.mark.parametrize("name", list(ROW_LEVEL))
def test_row_level_divisions_are_refused_with_where_and_what_to_do(db: str, name: str) -> None:
    text, at = ROW_LEVEL[name]
    with pytest.raises(UnsupportedViewError) as refused:
        deploy_text(db, "refused", text)
    message = str(refused.value)
    assert message.startswith(f"refused.sql:1:{text.index(at) + 1}: division by "), message
    assert "would make that write fail" in message and "nullif(" in message


def test_guarded_and_constant_divisions_deploy_and_writes_with_zero_succeed(
        db: str, conn: psycopg.Connection) -> None:
    views = {
        "guarded": "select t.id, t.a / nullif(t.b, 0) as r, t.a / 2 as h, t.a % 3 as m "
                   "from z.t t",
        "guarded_sum": "select t.k, sum(t.a / nullif(t.b, 0)) as s, count(*) as n "
                       "from z.t t group by t.k",
        "ratio": "select t.k, sum(t.a) / nullif(sum(t.b), 0) as r, sum(t.a)::numeric / "
                 "count(*) as per_row from z.t t group by t.k",
    }
    for name, text in views.items():
        assert deploy_text(db, name, text) == "created"
    conn.execute("insert into z.t values (3, 1, 7, 0), (4, 3, 1, 0)")
    conn.execute("update z.t set b = 0 where id = 2")
    for name, text in views.items():
        assert_equal(conn, name, text)
    conn.execute("delete from z.t where id in (3, 4)")
    conn.execute("update z.t set b = 1 where id = 2")
    for name, text in views.items():
        assert_equal(conn, name, text)


def test_reading_a_ratio_of_aggregates_raises_like_the_query_and_writes_succeed(
        db: str, conn: psycopg.Connection) -> None:
    text = "select t.k, sum(t.a) / sum(t.b) as r from z.t t group by t.k"
    assert deploy_text(db, "raw_ratio", text) == "created"
    conn.execute("insert into z.t values (5, 9, 1, 0)")  # group 9: sum(b) = 0
    for relation in ("live.raw_ratio", f"({text}) as q"):
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(f"select * from {relation}").fetchall()
    conn.execute("delete from z.t where id = 5")
    assert_equal(conn, "raw_ratio", text)


@pytest.mark.parametrize("inner", [
    "select t.k, sum(t.a) / sum(t.b) as r from z.t t group by t.k",
    "select round(count(*) filter (where t.a > 0)::numeric / count(*), 4) as r from z.t t",
    "select t.k, sum(t.a) as s from z.t t group by t.k having sum(t.a) % sum(t.b) = 0",
])
def test_a_view_over_a_view_whose_outputs_may_raise_is_refused(db: str, inner: str) -> None:
    assert deploy_text(db, "inner_raises", inner) in ("created", "replaced", "unchanged")
    with pytest.raises(UnsupportedViewError, match=r"1:27: live\.inner_raises \(an aggregate "
                       r"that may raise when finalised: .*nullif\("):
        deploy_text(db, "over_raises", "select count(*) as n from live.inner_raises x")


def test_a_view_over_a_grouped_ratio_by_count_stays_exact(db: str,
                                                          conn: psycopg.Connection) -> None:
    inner = ("select t.k, round(count(*) filter (where t.a > 3)::numeric / count(*), 4) as r "
             "from z.t t group by t.k")
    outer = "select x.r, count(*) as n from live.share x group by 1"
    assert deploy_text(db, "share", inner) == "created"
    assert deploy_text(db, "share_over", outer) == "created"
    conn.execute("insert into z.t values (6, 1, 1, 0), (7, 4, 8, 0)")
    assert_equal(conn, "share_over", outer)
    conn.execute("delete from z.t")
    assert_equal(conn, "share_over", outer)
