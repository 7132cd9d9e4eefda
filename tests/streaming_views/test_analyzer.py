"""Refusals at parse/check time: construct, line and column, reason and rewrite."""

from __future__ import annotations

import pytest

from streaming_views.analyzer import analyze
from streaming_views.errors import UnsupportedViewError, ViewFileError
from streaming_views.viewfile import parse_view_text

HEADER = "-- a view\n-- @keys: g\n"

# (view body after the header, construct, line, column, text in the rewrite)
REFUSALS = [
    ("select t.g, now() as n from s.t t", "now()", 3, 13, "date_bin"),
    ("select t.g from s.t t\nwhere t.ts > current_timestamp", "current_timestamp", 4, 14,
     "write mz_now() < t.ts instead of t.ts > CURRENT_TIMESTAMP"),
    ("select t.g, random() as r from s.t t", "random()", 3, 13, "column"),
    ("select t.g from s.t t left join s.u u on u.h > t.g", "LEFT JOIN on another key", 3, 33,
     "left join"),
    ("select t.g from s.t t full join s.u u using (g)", "FULL JOIN with USING/NATURAL", 3, 33,
     "left join"),
    ("select t.g from s.t t order by t.g", "ORDER BY", 3, 32,
     "SELECT t.g FROM s.t AS t — and compute the ORDER BY when you read it, which gives the same "
     "rows as your query: SELECT g FROM live.v ORDER BY g"),
    ("select t.g from s.t t limit 5", "LIMIT/OFFSET", 3, 23, "FROM live.v LIMIT 5"),
    ("select t.g from s.t t union all select u.g from s.u u", "UNION ALL", 3, 40,
     "move it into FROM"),
    ("select t.g from s.t t except select u.g from s.u u", "EXCEPT", 3, 37,
     "one view per branch"),
    ("with recursive x as (select t.g from s.t t) select x.g from x", "WITH RECURSIVE", 3, 1,
     "fixed depth"),
    ("select x.g from (select y.g from (select distinct t.g from s.t t) y) x",
     "aggregation inside a subquery", 3, 51, "outer query"),
    ("select x.g from (select t.g from s.t t union select u.g from s.u u) x", "UNION", 3, 53,
     "use UNION ALL inside FROM"),
    ("select x.g from (select t.g, count(*) as n from s.t t join s.u u on u.g = t.g "
     "group by t.g) x", "two-level aggregation over several tables", 3, 25, "own live view"),
    ("select t.g, (select max(u.g) from s.u u) as m from s.t t",
     "subquery in an expression", 3, 13, "LEFT JOIN"),
    ("select t.g, row_number() over () as r from s.t t", "window function row_number() OVER",
     3, 13, "SELECT g, row_number() OVER () AS r FROM live.v"),
    ("select t.g, string_agg(t.h, ',') as hs from s.t t group by t.g",
     "aggregate string_agg()", 3, 13, "SELECT g, string_agg(h, ',') AS hs FROM live.v GROUP BY g"),
    ("select distinct on (t.g) t.g, t.h from s.t t", "DISTINCT ON", 3, 21,
     "SELECT DISTINCT ON (g) g, h FROM live.v"),
    ("select g from t", "unqualified table t", 3, 15, "<schema>.t"),
    ("select a.g from s.t a join s.t a on a.g = a.g", "table s.t used twice", 3, 28,
     "alias each"),
    ("select t.g, mz_now() as n from s.t t", "mz_now() in the SELECT list", 3, 13, "WHERE"),
    ("select * from s.t t", "SELECT *", 3, 8, "list the columns"),
    ("select t.g, count(*) as n from s.t t group by rollup (t.g)",
     "GROUPING SETS/ROLLUP/CUBE", 3, 47,
     "SELECT g, count(*) AS n FROM live.v GROUP BY ROLLUP (g)"),
    ("select distinct t.g, count(*) as n from s.t t group by t.g", "DISTINCT with GROUP BY", 3,
     8, "drop DISTINCT"),
    ("select t.g, sum(t.v order by t.v) as s from s.t t group by t.g",
     "sum() with ORDER BY", 3, 13, "sum(t.v), which gives the same value"),
    ("select t.g from s.t t, generate_series(1, 3) x", "function in FROM", 3, 24, None),
]


@pytest.mark.parametrize(("body", "construct", "line", "column", "rewrite"), REFUSALS,
                         ids=[r[1] for r in REFUSALS])
def test_refusal_names_construct_position_and_rewrite(body, construct, line, column, rewrite):
    view = parse_view_text("v", HEADER + body)
    with pytest.raises(UnsupportedViewError) as info:
        analyze(view)
    err = info.value
    assert err.construct == construct
    if line is not None:
        assert (err.line, err.column) == (line, column), str(err)
        assert f"v.sql:{line}:{column}: {construct} is not supported" in str(err)
    if rewrite is not None:
        assert err.rewrite is not None and rewrite in err.rewrite
        assert "Rewrite:" in str(err)
    assert err.reason and err.reason in str(err)


def test_non_deterministic_refusal_explains_why():
    with pytest.raises(UnsupportedViewError) as info:
        analyze(parse_view_text("v", "select t.g, now() as n from s.t t"))
    assert "non-deterministic" in info.value.reason
    assert "no trigger can keep the view equal to its query" in info.value.reason


def test_syntax_error_has_position():
    with pytest.raises(ViewFileError, match=r"v.sql:1:\d+: syntax error"):
        analyze(parse_view_text("v", "select from where"))


def test_two_statements_refused():
    with pytest.raises(ViewFileError, match=r"v.sql:1:25: a view file holds exactly one SELECT; "
                       "found 2 statements"):
        analyze(parse_view_text("v", "select 1 as a from s.t; select 2 as b from s.t"))


def test_not_a_select_refused():
    with pytest.raises(UnsupportedViewError, match="InsertStmt"):
        analyze(parse_view_text("v", "insert into s.t values (1)"))


def test_supported_view_is_taken_apart():
    an = analyze(parse_view_text("v", HEADER + (
        "select s.region, date_bin('1 minute', o.placed_at, '2000-01-01') as w, count(*) as n,"
        " sum(o.total) filter (where o.status <> 'x') as total\n"
        "from shop.orders o join shop.stores s on s.store_id = o.store_id\n"
        "group by 1, w having count(*) > 1")))
    assert an.kind == "aggregate"
    assert [(t.schema, t.name, t.ref) for t in an.tables] == [
        ("shop", "orders", "o"), ("shop", "stores", "s")]
    assert len(an.group) == 2 and len(an.aggs) == 2
    assert an.aggs[1].filter is not None
