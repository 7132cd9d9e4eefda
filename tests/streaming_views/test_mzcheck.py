"""Materialize target's check: Materialize SQL passes, what Materialize refuses is refused with
its position, and the embedded engine's refusals stay for the embedded target."""

from __future__ import annotations

import pytest

from streaming_views import load_views
from streaming_views.analyzer import analyze
from streaming_views.errors import UnsupportedViewError, ViewFileError
from streaming_views.mzcheck import check_materialize
from streaming_views.viewfile import parse_view_text

ACCEPTED = {
    "left_join_with_aggregate": "select o.store_id, count(p.payment_id) as payments "
    "from shop.orders o left join shop.payments p on p.order_id = o.order_id group by 1",
    "full_join": "select o.order_id, p.payment_id from shop.orders o "
    "full join shop.payments p on p.order_id = o.order_id",
    "self_join": "select a.order_id, b.order_id as previous_id from shop.orders a "
    "join shop.orders b on b.customer_id = a.customer_id and b.placed_at < a.placed_at",
    "exists_and_not_in": "select o.order_id from shop.orders o where exists (select 1 from "
    "shop.payments p where p.order_id = o.order_id) and o.store_id not in "
    "(select s.store_id from shop.closed_stores s)",
    "with": "with paid as (select p.order_id, sum(p.amount) as paid from shop.payments p "
    "group by 1) select o.store_id, sum(paid.paid) as paid from shop.orders o "
    "join paid on paid.order_id = o.order_id group by 1",
    "two_level_aggregation": "select n, count(*) as customers from (select o.customer_id, "
    "count(*) as n from shop.orders o group by 1) per_customer group by n",
    "window_function": "select o.order_id, row_number() over (partition by o.customer_id "
    "order by o.placed_at) as nth from shop.orders o",
    "temporal_filter": "select o.store_id, count(*) as n from shop.orders o where "
    "mz_now() <= o.placed_at + interval '5 minutes' and (o.status = 'paid' or "
    "o.status = 'shipped') group by 1",
    "temporal_between": "select o.order_id from shop.orders o where mz_now() between "
    "o.placed_at and o.placed_at + interval '1 hour'",
    "temporal_having": "select o.store_id, max(o.placed_at) as last_at from shop.orders o "
    "group by 1 having mz_now() < max(o.placed_at) + interval '1 day'",
    "distinct_on_lateral": "select distinct on (o.customer_id) o.customer_id, o.order_id from "
    "shop.orders o order by o.customer_id, o.placed_at desc",
    "view_over_view": "select r.store_id, r.revenue from live.store_revenue_per_minute r",
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_materialize_sql_is_accepted(name: str) -> None:
    analysis = check_materialize(parse_view_text(name, ACCEPTED[name]))
    assert analysis.tables or analysis.reads


def test_embedded_refusals_stay_for_the_embedded_target() -> None:
    for name in ("window_function", "distinct_on_lateral", "temporal_having"):
        with pytest.raises(UnsupportedViewError):
            analyze(parse_view_text(name, ACCEPTED[name]))


def test_tables_and_reads() -> None:
    a = check_materialize(parse_view_text("v", ACCEPTED["with"]))
    assert set(a.tables) == {("shop", "payments"), ("shop", "orders")}  # the CTE is no table
    b = check_materialize(parse_view_text("v", ACCEPTED["view_over_view"]))
    assert (b.tables, b.reads) == ((), ("store_revenue_per_minute",))


def test_demo_views_pass() -> None:
    for view in load_views():
        assert check_materialize(view).tables


REFUSED = [
    # (sql, construct, line, column, words of the rewrite)
    ("-- header\nselect o.order_id, now() as at from shop.orders o", "now()", 2, 20,
     "temporal filter"),
    ("select o.order_id from shop.orders o\nwhere o.placed_at > current_timestamp - "
     "interval '1 day'", "current_timestamp", 2, 21, "mz_now()"),
    ("select current_user as who from shop.orders o", "current_user", 1, 8, "drop it"),
    ("select o.order_id from shop.orders o where mz_now() <= o.placed_at + interval "
     "'5 minutes' or o.status = 'x'", "mz_now() under OR", 1, 44, "UNION ALL"),
    ("select o.order_id from shop.orders o where not (mz_now() <= o.placed_at)",
     "mz_now() under NOT", 1, 49, "top-level AND"),
    ("select o.order_id from shop.orders o where mz_now() - interval '5 minutes' <= "
     "o.placed_at", "arithmetic on mz_now()", 1, 44, "other side"),
    ("select o.order_id, mz_now() as at from shop.orders o",
     "mz_now() outside a temporal filter", 1, 20, "mz_now() <="),
    ("select o.order_id from shop.orders o where mz_now() <> o.placed_at", "mz_now() <>", 1,
     44, "separate views"),
    ("select count(*) filter (where mz_now() <= o.placed_at) as n from shop.orders o",
     "mz_now() in an aggregate FILTER", 1, 31, "WHERE"),
    ("select o.order_id from shop.orders o join shop.payments p on p.order_id = o.order_id "
     "and mz_now() <= p.created_at", "mz_now() outside WHERE/HAVING", 1, 90, "WHERE"),
    ("with recursive r as (select 1 as n union all select n + 1 from r) select n from r",
     "WITH RECURSIVE", 1, 6, "WITH MUTUALLY RECURSIVE"),
    ("with mutually recursive r (n int) as (select 1) select n from r",
     "WITH MUTUALLY RECURSIVE", 1, 6, "directly"),
    ("select o.store_id, count(*) as n from shop.orders o\ngroup by rollup (o.store_id)",
     "ROLLUP", 2, 10, "UNION ALL"),
    ("select o.store_id, count(*) as n from shop.orders o group by grouping sets "
     "((o.store_id), ())", "GROUPING SETS", 1, 62, "UNION ALL"),
    ("select o.order_id from shop.orders o tablesample system (10)", "TABLESAMPLE", 1, 38,
     "hash"),
    ("select o.order_id from orders o", "unqualified table orders", 1, 24, "shop.orders"),
]


@pytest.mark.parametrize(("text", "construct", "line", "column", "rewrite"), REFUSED,
                         ids=[r[1] for r in REFUSED])
def test_what_materialize_refuses_is_refused_with_its_position(
        text: str, construct: str, line: int, column: int, rewrite: str) -> None:
    with pytest.raises(UnsupportedViewError) as caught:
        check_materialize(parse_view_text("v", text))
    err = caught.value
    assert (err.construct, err.line, err.column) == (construct, line, column)
    assert rewrite in (err.rewrite or "")
    assert str(err).startswith(f"v.sql:{line}:{column}: {construct} is not supported")


def test_syntax_error_names_the_position() -> None:
    with pytest.raises(ViewFileError, match=r"v.sql:2:\d+: syntax error"):
        check_materialize(parse_view_text("v", "select o.id\nfrom where"))


def test_not_a_select_is_refused() -> None:
    with pytest.raises(UnsupportedViewError, match="DELETE is not supported"):
        check_materialize(parse_view_text("v", "delete from shop.orders"))
