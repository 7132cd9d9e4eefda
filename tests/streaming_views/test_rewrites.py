"""Refusals as a new user meets them: the construct at its line:column, never a raw PostgreSQL
error, and a ``Rewrite:`` that is an equivalent query — checked here by deploying the rewrite
and comparing it with the refused query on a real server.

Before v24: window functions, holistic aggregates, DISTINCT ON, GROUPING SETS and ORDER BY
offered rewrites that were refused themselves or gave other rows ("drop the ORDER BY inside the
aggregate", "use count, sum...", "min()/max()"); a scalar subquery was to become an inner JOIN
(which drops the rows without a match); two outputs of one name, a ``row(...)`` column,
``count(distinct (a, b))`` and a catalog table failed with PostgreSQL's words and no position
(or at trigger creation); FOR UPDATE and a second statement had no position; TABLESAMPLE was
called "RangeTableSample".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import deploy_text

SETUP = """
drop schema if exists rw cascade;
create schema rw;
create table rw.t (id int primary key, g int, h text, v numeric, ts timestamptz, b bool,
                   bits int, arr int[]);
create table rw.d (k int primary key, name text);
insert into rw.d values (1, 'one'), (2, 'two'), (4, 'four');
insert into rw.t values
  (1, 1, 'a', 1.5, '2026-01-01 10:05+00', true, 1, '{1,2}'),
  (2, 1, 'b', 2, '2026-01-01 10:55+00', false, 2, '{}'),
  (3, 1, 'a', null, '2026-01-01 11:00+00', null, null, null),
  (4, 2, null, 7.25, '2026-01-01 11:30+00', true, 4, '{3}'),
  (5, 2, 'c', 7.25, null, true, 4, '{3,3}'),
  (6, null, 'a', -1, '2026-01-02 00:00+00', false, 8, '{4}'),
  (7, 3, 'b', 0, '2026-01-01 10:00+00', null, 1, '{5}');
"""
WRITES = ["insert into rw.t values (8, 1, 'c', 4, '2026-01-01 12:00+00', true, 16, '{6}'), "
          "(9, 2, 'a', 1, '2026-01-01 10:10+00', false, 2, '{}')",
          "update rw.t set g = 2, v = v + 1 where id in (1, 7)",
          "delete from rw.t where id in (4, 6)",
          "update rw.d set name = 'uno' where k = 1"]

READ_TIME = {  # refused; the rewrite: a view of the rows, the rest computed when reading
    "window": "select t.id, row_number() over (partition by t.g order by t.id) as nth, "
              "sum(t.v) over (partition by t.g) as gv from rw.t t where t.id > 1",
    "array_agg": "select t.g, array_agg(t.id order by t.id) as ids, count(*) as n "
                 "from rw.t t group by t.g",
    "string_agg": "select coalesce(t.h, '-') as h, string_agg(t.id::text, ',' order by t.id "
                  "desc) as ids from rw.t t group by 1 having count(*) > 1",
    "ordered_set": "select t.g, percentile_cont(0.5) within group (order by t.v) as med, "
                   "mode() within group (order by t.h) as m from rw.t t group by t.g",
    "stddev": "select t.g, stddev(t.v) as sd, variance(t.v) as var, bit_or(t.bits) as bo "
              "from rw.t t group by t.g",
    "jsonb_object_agg": "select d.name, jsonb_object_agg(t.id, t.v) as m from rw.t t "
                        "join rw.d d on d.k = t.g group by d.name",
    "distinct_on": "select distinct on (t.g) t.g, t.id, t.v from rw.t t order by t.g, t.id desc",
    "grouping_sets": "select t.g, t.h, count(*) as n, sum(t.v) as sv from rw.t t "
                     "group by grouping sets ((t.g), (t.h), ())",
    "top_k": "select t.g, count(*) as n from rw.t t group by t.g order by n desc, t.g limit 2",
    "bucket": "select date_bin('1 hour', t.ts, timestamptz '2000-01-01') as w, "
              "array_agg(distinct t.g) as gs from rw.t t group by 1",
    "global": "select string_agg(t.h, ',' order by t.h) as hs from rw.t t",
    "session": "select t.g, array_agg(t.ts::date order by t.id) as days, string_agg(to_char("
               "t.ts, 'HH24'), ',' order by t.id) as hours, rank() over (order by "
               "min(t.ts::date)) as r from rw.t t group by t.g",
}


@pytest.fixture(scope="module")
def db(module_db: str) -> str:
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute(SETUP)
    return module_db


def _refusal(db: str, name: str, text: str) -> UnsupportedViewError:
    with pytest.raises(UnsupportedViewError) as info:
        deploy_text(db, name, text)
    return info.value


def _same_rows(conn: psycopg.Connection, left: str, right: str) -> None:
    for a, b in ((left, right), (right, left)):
        extra = conn.execute(f"select * from (({a}) except all ({b})) as x").fetchall()
        assert not extra, f"{a}\n  has rows that\n{b}\n  has not: {extra}"


def _utc(value: object) -> str:
    """A row's text with its instants in UTC (psycopg returns them in the session's zone)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return repr(value.astimezone(UTC))
    if isinstance(value, list | tuple):
        return "(" + ", ".join(_utc(v) for v in value) + ")"
    return repr(value)


def _same_rows_in_any_zone(conn: psycopg.Connection, query: str, read: str) -> None:
    """The query in UTC (the pinned settings the view's query means) and the read query in a
    reader's own zone return the same rows."""
    conn.execute("set time zone 'UTC'")
    want = sorted(map(_utc, conn.execute(query).fetchall()))
    conn.execute("set time zone 'Asia/Kolkata'")
    try:
        got = sorted(map(_utc, conn.execute(read).fetchall()))
    finally:
        conn.execute("set time zone 'UTC'")
    assert got == want, f"{query}\n  gives {want}\n{read}\n  gives {got}"


@pytest.mark.parametrize("name", sorted(READ_TIME))
def test_read_time_rewrite_is_deployable_and_gives_the_query_rows(db: str, name: str) -> None:
    text = READ_TIME[name]
    err = _refusal(db, name, text)
    assert err.line == 1 and err.column is not None, str(err)
    match = re.fullmatch(r"deploy this view(?: of the rows it reads)?: (.+) — and compute .+ "
                         r"when you read it, which gives the same rows as your query: (.+)",
                         err.rewrite or "")
    assert match, str(err)
    rows, read = match.groups()
    assert deploy_text(db, name, rows) == "created"
    with psycopg.connect(db, autocommit=True) as conn:
        _same_rows_in_any_zone(conn, text, read)
        for write in WRITES:
            conn.execute(write)
            _same_rows_in_any_zone(conn, text, read)
        conn.execute(SETUP)  # the next case starts from the same rows
        conn.execute(f"drop view if exists live.{name}")


def test_postgresql_errors_become_refusals_at_the_expression(db: str) -> None:
    err = _refusal(db, "dup", "select t.id,\n       t.id from rw.t t")
    assert (err.line, err.column, err.construct) == (2, 8, "output column 'id' twice"), str(err)
    assert "t.id AS id_2" in (err.rewrite or "")
    err = _refusal(db, "dup2", "select t.g, count(*) as g from rw.t t group by t.g")
    assert (err.line, err.column) == (1, 13) and "count(*) AS g_2" in str(err)
    err = _refusal(db, "hidden", "select t.g as __count, count(*) as n from rw.t t group by t.g")
    assert (err.column, err.rewrite) == (8, "name it: t.g AS count"), str(err)
    err = _refusal(db, "rec", "select t.id, row(t.h, t.v) as r from rw.t t")
    assert (err.line, err.column) == (1, 14), str(err)
    assert err.construct == "output column of type record" and "t.h, t.v" in str(err)
    err = _refusal(db, "catalog", "select c.relname from pg_catalog.pg_class c")
    assert err.construct == "system catalog pg_catalog.pg_class" and err.column == 23, str(err)
    err = _refusal(db, "catalog", "select c.table_name from information_schema.tables c")
    assert err.construct == "system catalog information_schema.tables"


def test_count_of_distinct_pairs_is_refused_with_an_exact_two_level_rewrite(db: str) -> None:
    query = "select t.g, count(distinct (t.h, t.v)) as n from rw.t t group by t.g"
    err = _refusal(db, "pairs", query)
    assert (err.line, err.column, err.construct) == (1, 28, "expression of type record"), str(err)
    assert "two-level aggregation" in str(err)
    two_level = ("select x.g, count(*) as n from (select t.g, t.h, t.v from rw.t t "
                 "group by t.g, t.h, t.v) as x group by x.g")
    assert deploy_text(db, "pairs", two_level) == "created"
    with psycopg.connect(db, autocommit=True) as conn:
        for write in ["insert into rw.t (id, g) values (20, 1), (21, 1)", *WRITES]:
            conn.execute(write)
            _same_rows(conn, query, "select * from live.pairs")
        conn.execute(SETUP)
    err = _refusal(db, "pairs2", "select t.g, count(distinct t.h, t.v) as n from rw.t t "
                   "group by t.g")
    assert err.construct == "count() with 2 arguments" and "two-level" in str(err)


def test_lateral_function_rewrite_in_the_select_list_gives_the_same_rows(db: str) -> None:
    query = "select t.id, x from rw.t t, lateral unnest(t.arr) as x"
    err = _refusal(db, "unnested", query)
    assert err.construct == "function in FROM" and "unnest(t.arr) as x" in str(err), str(err)
    assert deploy_text(db, "unnested", "select t.id, unnest(t.arr) as x from rw.t t") == \
        "created"
    with psycopg.connect(db, autocommit=True) as conn:
        for write in WRITES:
            conn.execute(write)
            _same_rows(conn, query, "select * from live.unnested")
        conn.execute(SETUP)


@pytest.mark.parametrize(("text", "construct", "line", "column", "rewrite"), [
    ("select t.id\nfrom rw.t t\nfor update", "FOR UPDATE/SHARE", 3, 1,
     "SELECT t.id FROM rw.t AS t"),
    ("select t.id from rw.t t tablesample bernoulli (50)", "TABLESAMPLE", 1, 18,
     "without TABLESAMPLE"),
    ("select t.id, x.name from rw.t t,\n  lateral (select d.name from rw.d d where d.k = t.g) x",
     "LATERAL subquery", 2, 3, "join b on b.k = a.k"),
    ("select t.id, (select d.name from rw.d d where d.k = t.g) as name from rw.t t",
     "subquery in an expression", 1, 14, "left join s.dim d on d.k = t.g"),
    ("select t.g, every(t.b) as all_b from rw.t t group by t.g", "aggregate every()", 1, 13,
     "bool_and(t.b), the same aggregate"),
    ("select t.g, max(t.v order by t.id) as m from rw.t t group by t.g", "max() with ORDER BY",
     1, 13, "max(t.v), which gives the same value"),
])
def test_refusal_names_the_construct_at_its_position(db: str, text: str, construct: str,
                                                     line: int, column: int,
                                                     rewrite: str) -> None:
    err = _refusal(db, "refused", text)
    assert (err.construct, err.line, err.column) == (construct, line, column), str(err)
    assert rewrite in (err.rewrite or ""), str(err)


def test_second_statement_is_pointed_at(db: str) -> None:
    from streaming_views.errors import ViewFileError
    with pytest.raises(ViewFileError, match=r"two\.sql:3:1: a view file holds exactly one "
                       r"SELECT; found 2 statements \(the second starts here\)"):
        deploy_text(db, "two", "-- two\nselect t.id from rw.t t;\nselect t.g from rw.t t;\n")


def test_now_in_a_comparison_is_refused_with_its_temporal_filter(db: str) -> None:
    from datetime import timedelta

    from streaming_views.expiry import tick
    query = ("select t.g, count(*) as n from rw.t t where t.b and t.ts > now() - interval "
             "'1 day' group by t.g")
    err = _refusal(db, "recent", query)
    assert (err.construct, err.column) == ("now()", 60), str(err)
    bound = "mz_now() < t.ts + CAST('1 day' AS interval)"
    assert f"write {bound} instead of t.ts > now() - CAST('1 day' AS interval)" in str(err)
    at = datetime.now(UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("update rw.t set ts = %s - id * interval '5 hours'", (at,))
    deploy_text(db, "recent", query.replace("t.ts > now() - interval '1 day'", bound))
    tick(db, at)
    with psycopg.connect(db, autocommit=True) as conn:
        at_query = query.replace("now()", f"'{at.isoformat()}'::timestamptz")
        _same_rows(conn, at_query, "select * from live.recent")
        later = at + timedelta(hours=6)
        tick(db, later)
        _same_rows(conn, at_query.replace(at.isoformat(), later.isoformat()),
                   "select * from live.recent")
        conn.execute(SETUP)


def test_a_view_in_from_is_refused_with_its_query_inlined(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("create or replace view rw.pv as select t.id, t.g, t.v from rw.t t "
                     "where t.v > 1")
    query = "select p.g, count(*) as n, sum(p.v) as sv from rw.pv p group by p.g"
    err = _refusal(db, "inlined", query)
    assert err.construct == "rw.pv is a view", str(err)
    match = re.search(r"reads base tables: (\(.+\) AS p) is the same rows", str(err))
    assert match, str(err)
    assert deploy_text(db, "inlined", query.replace("rw.pv p", match.group(1))) == "created"
    with psycopg.connect(db, autocommit=True) as conn:
        for write in WRITES:
            conn.execute(write)
            _same_rows(conn, query, "select * from live.inlined")
        conn.execute(SETUP)
