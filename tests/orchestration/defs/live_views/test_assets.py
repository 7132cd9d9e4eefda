"""Live view assets: materialising deploys on the embedded engine; the check compares each view
with its query, fails when they differ and passes again after a re-materialisation."""

from __future__ import annotations

import dagster as dg
import psycopg

from orchestration.defs.keys import view_key
from orchestration.defs.live_views.assets import base_tables
from orchestration.defs.live_views.checks import EMBEDDED_CHECK
from streaming_views.viewfile import load_views
from tests.orchestration.defs.conftest import check_results


def test_base_tables_from_the_analyzer() -> None:
    from streaming_views.viewfile import parse_view_text

    text = ("-- from shop.fake in a comment\nselect o.store_id, count(*) as n from shop.orders"
            " as o\njoin shop.payments p on p.order_id = o.order_id group by o.store_id")
    assert base_tables(parse_view_text("v", text)) == ([("shop", "orders"),
                                                        ("shop", "payments")], None)
    tables, refused = base_tables(parse_view_text("w", "select now() as t from shop.orders"))
    assert tables == [] and "now" in refused


def test_base_tables_for_materialize_follow_what_materialize_supports() -> None:
    from streaming_views.viewfile import parse_view_text

    ranked = parse_view_text("v", "select o.order_id, p.payment_id, row_number() over "
                                  "(partition by o.store_id order by o.placed_at) as nth from "
                                  "shop.orders o join shop.payments p on p.order_id = o.order_id")
    assert base_tables(ranked, "embedded")[0] == []  # window functions: embedded refuses them
    tables, refused = base_tables(ranked, "materialize")
    assert refused is None and set(tables) == {("shop", "orders"), ("shop", "payments")}
    tables, refused = base_tables(parse_view_text("w", "select now() as t from shop.orders o"),
                                  "materialize")
    assert tables == [] and "now() is not supported: Materialize" in refused


def test_materialise_deploys_and_checks_pass(built) -> None:
    result = built.run_assets(lambda k: k == view_key("daily_store_revenue"))
    assert result.success
    mats = result.get_asset_materialization_events()
    meta = mats[0].event_specific_data.materialization.metadata
    assert meta["action"].value == "rebuilt"  # deployed by the fixture, unchanged since
    assert meta["rows"].value > 0
    checks = check_results(result, EMBEDDED_CHECK)
    assert checks[("live/daily_store_revenue", EMBEDDED_CHECK)].passed
    names = built.sql("select name from tidemark.views order by 1")
    assert ("daily_store_revenue",) in names and len(names) == len(load_views())


def test_check_fails_on_a_stale_view_and_rematerialising_repairs_it(built) -> None:
    key = dg.AssetCheckKey(view_key("store_revenue_per_minute"), EMBEDDED_CHECK)
    with psycopg.connect(built.landing_url, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")  # the view's triggers skip
        order = conn.execute(  # the newest order: inside the view's @retention window
            "update shop.orders set total_amount = total_amount + 1 where order_id = (select "
            "order_id from shop.orders where status <> 'cancelled' order by placed_at desc "
            "limit 1) returning order_id").fetchone()[0]
    try:
        failed = check_results(built.run_checks([key]))[
            ("live/store_revenue_per_minute", EMBEDDED_CHECK)]
        assert not failed.passed
        assert failed.metadata["live_only_rows"].value == 1
        assert failed.metadata["query_only_rows"].value == 1
        assert "differs from its query" in failed.description
        repaired = built.run_assets(lambda k: k.path[0] == "live")  # every view over orders
        assert check_results(repaired)[("live/store_revenue_per_minute", EMBEDDED_CHECK)].passed
    finally:  # back to the source's value, through the triggers this time
        with psycopg.connect(built.landing_url, autocommit=True) as conn:
            conn.execute("update shop.orders set total_amount = total_amount - 1 "
                         "where order_id = %s", (order,))
    again = check_results(built.run_checks([dg.AssetCheckKey(view_key(v), EMBEDDED_CHECK) for v in
                                            ("store_revenue_per_minute", "daily_store_revenue",
                                             "store_cancellation_rate")]))
    assert len(again) == 3 and all(e.passed for e in again.values())


def test_a_temporal_view_depends_on_its_timed_table() -> None:
    from streaming_views.viewfile import parse_view_text

    text = ("select o.store_id, count(*) as n from shop.orders as o where mz_now() >= "
            "o.placed_at and mz_now() < o.placed_at + interval '5 minutes' group by 1")
    assert base_tables(parse_view_text("v", text)) == ([("shop", "orders")], None)


def test_a_view_over_a_live_view_depends_on_that_view(tmp_path, monkeypatch) -> None:
    from orchestration.defs.keys import table_key, view_key
    from orchestration.defs.live_views import assets

    (tmp_path / "inner.sql").write_text("select o.store_id, count(*) as n from shop.orders o "
                                        "group by 1\n")
    (tmp_path / "outer.sql").write_text("select i.n, count(*) as c from live.inner i "
                                        "group by 1\n")
    from streaming_views.viewfile import load_views
    monkeypatch.setattr(assets, "view_files", lambda: tuple(load_views(tmp_path)))
    deps = {s.key: {d.asset_key for d in s.deps} for s in assets._specs()}
    assert deps[view_key("outer")] == {view_key("inner")}
    assert deps[view_key("inner")] == {table_key("shop", "orders")}
