"""Serving views: final (mart) rows for reconciled days, provisional (live) rows otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg


def test_serving_final_for_reconciled_days_provisional_otherwise(built) -> None:
    from orchestration.defs.keys import check_name, mart_key

    built.run_checks([dg.AssetCheckKey(mart_key("fct_daily_store_revenue"),
                                       check_name("daily_store_revenue"))])
    result = built.run_assets(lambda k: k.path[0] == "serving")
    assert result.success
    rows = built.sql("select order_date, status, count(*), sum(net_revenue) from "
                     "serving.daily_store_revenue group by 1, 2 order by 1")
    by_day = {(d, s): (n, total) for d, s, n, total in rows}
    reconciled = {d for (d,) in built.sql(
        "select day from tidemark.reconciled_days where pair = 'daily_store_revenue' "
        "and status = 'reconciled'")}
    assert reconciled == set(built.built_days)
    for day in built.built_days:
        truth = built.sql("select count(*), sum(net_revenue) from marts.fct_daily_store_revenue"
                          " where order_date = %s", (day,))[0]
        assert by_day[(day, "final")] == truth
    today = datetime.now(UTC).date()
    if today in built.days:
        live = built.sql("select count(*), sum(net_revenue) from live.daily_store_revenue "
                         "where order_date = %s", (today,))[0]
        assert by_day[(today, "provisional")] == live
    assert {s for (_, s) in by_day} <= {"final", "provisional"}
