"""The view files deploy on the demo schema and stay equal to their queries under load.

Every file of streaming_views/views/ is deployed: the shipped views and a user's own (a view over
a table the demo does not create reads that table empty, from its contract).
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg.conninfo import make_conninfo

from contracts import load_contracts
from streaming_views import deploy, load_views, verify
from tests.support import create_contracted_tables
from tidemark.demo.load import run_load
from tidemark.demo.seed import seed_history


def test_demo_views_follow_seed_and_load(module_db: str) -> None:
    seed_history(module_db, days=2, orders_per_day=150, seed=7,
                 end=datetime(2026, 3, 1, tzinfo=UTC), schema="shop")
    # a user's own contracted tables (README "Extending"), empty, for the views reading them
    create_contracted_tables(module_db, load_contracts(), schema="shop")
    results = deploy(module_db)
    assert {r.name for r in results} == {v.name for v in load_views()}
    assert all(r.action == "created" for r in results)
    assert all(v.ok for v in verify(module_db)), [v for v in verify(module_db) if not v.ok]
    with psycopg.connect(module_db) as conn:
        before = conn.execute("select sum(order_count) from live.daily_store_revenue").fetchone()
        assert before[0] == 300
    load_dsn = make_conninfo(module_db, options="-csearch_path=shop")
    stats = run_load(load_dsn, rate=300, duration_s=3, seed=8)
    assert stats.transactions > 0
    failures = [v for v in verify(module_db) if not v.ok]
    assert not failures, failures
    with psycopg.connect(module_db) as conn:
        counts = dict(conn.execute(
            "select 'orders', count(*) from shop.orders union all "
            "select 'live', sum(order_count) from live.daily_store_revenue").fetchall())
        assert counts["orders"] == counts["live"] > 300
        carts = conn.execute("select count(*) from live.active_carts").fetchone()[0]
        assert carts >= 0
    assert all(r.action == "unchanged" for r in deploy(module_db))
