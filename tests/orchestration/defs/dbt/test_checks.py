"""``dbt source freshness`` as asset checks: fresh tables pass, a stale one fails with its age."""

from __future__ import annotations

import dagster as dg
import psycopg

from tests.orchestration.defs.conftest import check_results

CHECK = "dbt_source_freshness"


def test_source_freshness_pass_and_error(orch) -> None:
    with psycopg.connect(orch.source_url, autocommit=True) as conn:
        conn.execute("update public.orders set updated_at = clock_timestamp() where order_id = "
                     "(select min(order_id) from public.orders)")
    orch.catch_up()
    orders = dg.AssetCheckKey(dg.AssetKey(["shop", "orders"]), CHECK)
    deliveries = dg.AssetCheckKey(dg.AssetKey(["shop", "deliveries"]), CHECK)
    # freshness reads the changelog's newest changes (not the mirror): age those
    orch.sql("update cdc.shop__deliveries set updated_at = updated_at - interval '3 days'")
    try:
        results = check_results(orch.run_checks([orders, deliveries]))
    finally:
        orch.sql("update cdc.shop__deliveries set updated_at = updated_at + interval '3 days'")
    fresh = results[("shop/orders", CHECK)]
    assert fresh.passed, fresh.description
    assert fresh.metadata["status"].value == "pass"
    assert 0 <= fresh.metadata["age_s"].value < 900
    stale = results[("shop/deliveries", CHECK)]
    assert not stale.passed
    assert stale.severity == dg.AssetCheckSeverity.ERROR
    assert stale.metadata["status"].value == "error"
    assert stale.metadata["age_s"].value > 3 * 86400 - 3600
    assert "old" in stale.description and "error_after" in stale.description
