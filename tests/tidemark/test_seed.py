"""The history seed writes a consistent, deterministic shop, once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tidemark.demo.schema import DEMO_TABLES
from tidemark.demo.seed import SeedStats, seed_history
from tidemark.errors import DemoInputError, DemoStateError

TIDEMARK = shutil.which("tidemark")
END = datetime(2026, 3, 1, 18, 30, tzinfo=UTC)
PK = {"stores": "store_id", "customers": "customer_id", "products": "product_id",
      "orders": "order_id", "order_items": "order_id, line_number", "payments": "payment_id",
      "deliveries": "delivery_id", "app_events": "outbox_id"}


def table_digests(dsn: str, schema: str = "public") -> dict[str, str]:
    """md5 of every demo table's rows in key order."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for table in DEMO_TABLES:
            query = sql.SQL("select md5(coalesce(string_agg(t::text, '|' order by {}), ''))"
                            " from {} as t").format(sql.SQL(PK[table]),
                                                    sql.Identifier(schema, table))
            out[table] = conn.execute(query).fetchone()[0]
    return out


@pytest.fixture(scope="module")
def seeded(module_db: str) -> tuple[str, SeedStats]:
    stats = seed_history(module_db, days=3, orders_per_day=400, seed=11, end=END)
    return module_db, stats


def test_seed_writes_the_requested_history(seeded: tuple[str, SeedStats]) -> None:
    dsn, stats = seeded
    assert stats.rows["orders"] == 1200
    assert stats.start == END - timedelta(days=3) and stats.end == END
    with psycopg.connect(dsn) as conn:
        counted = {t: conn.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(t))).fetchone()[0] for t in DEMO_TABLES}
        first, last = conn.execute("select min(placed_at), max(placed_at) from orders").fetchone()
        statuses = dict(conn.execute("select status, count(*) from orders group by status"))
        kinds = dict(conn.execute(
            "select payment_kind, count(*) from payments group by payment_kind"))
        event_types = {r[0] for r in conn.execute("select distinct event_type from app_events")}
        late_deliveries = conn.execute(
            "select count(*) from deliveries where delivered_at > promised_at").fetchone()[0]
        noon, night = conn.execute(
            "select count(*) filter (where extract(hour from placed_at) between 11 and 14),"
            " count(*) filter (where extract(hour from placed_at) between 1 and 4)"
            " from orders").fetchone()
    assert counted == stats.rows
    assert END - timedelta(days=3) <= first < last <= END
    assert statuses["delivered"] > 1000 and statuses["cancelled"] > 0
    assert kinds["refund"] > 0 and kinds["charge"] >= statuses["delivered"]
    assert event_types == {"session_started", "cart_item_added", "checkout_started"}
    assert late_deliveries > 0
    assert noon > 1.5 * night  # a daily shape: busier at lunch than at night


def test_seeded_shop_is_consistent(seeded: tuple[str, SeedStats],
                                   broken_rules: Callable[[str], dict]) -> None:
    dsn, _ = seeded
    assert broken_rules(dsn) == {}


def test_seeded_events_follow_their_orders(seeded: tuple[str, SeedStats],
                                           event_shares: Callable[[str], dict]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        mismatched = conn.execute(
            "select o.order_id from orders o join app_events e"
            " on e.outbox_id = o.order_id * 20 + 9"
            " where e.payload ? 'cart_value' and e.payload ? 'cart_id'"
            " and jsonb_typeof(e.payload -> 'cart_value') = 'number'"
            " and (e.payload ->> 'cart_value')::numeric >= 0"
            " and (e.payload ->> 'cart_value')::numeric <> o.total_amount").fetchall()
        outbox_next = conn.execute(
            "select nextval(pg_get_serial_sequence('app_events', 'outbox_id'))"
            " > (select max(outbox_id) from app_events)").fetchone()[0]
        after_end = conn.execute(
            "select count(*) from app_events where received_at > %s", (END,)).fetchone()[0]
    assert mismatched == []
    assert outbox_next  # the app's own inserts continue after the seeded ids
    assert after_end == 0
    shares = event_shares(dsn)
    assert shares["events"] > 5000
    assert shares["late_share"] == pytest.approx(0.10, abs=0.025)
    assert shares["duplicate_share"] == pytest.approx(0.02, abs=0.01)
    assert shares["malformed_share"] == pytest.approx(0.02, abs=0.01)


def test_same_seed_same_rows_other_seed_other_rows(seeded: tuple[str, SeedStats],
                                                   fresh_db: Callable[[str], str]) -> None:
    dsn, _ = seeded
    again, other = fresh_db("seed_again"), fresh_db("seed_other")
    seed_history(again, days=3, orders_per_day=400, seed=11, end=END)
    seed_history(other, days=3, orders_per_day=400, seed=12, end=END)
    assert table_digests(again) == table_digests(dsn)
    differs = {t for t, d in table_digests(other).items() if d != table_digests(dsn)[t]}
    assert differs == set(DEMO_TABLES)


def test_seeding_twice_is_refused(seeded: tuple[str, SeedStats]) -> None:
    dsn, stats = seeded
    with pytest.raises(DemoStateError, match="already hold rows"):
        seed_history(dsn, days=1, orders_per_day=10, seed=11, end=END)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from orders").fetchone()[0] == stats.rows["orders"]


def test_seed_into_another_schema(fresh_db: Callable[[str], str],
                                  broken_rules: Callable[[str], dict]) -> None:
    dsn = fresh_db("seed_schema")
    stats = seed_history(dsn, days=1, orders_per_day=50, seed=3, end=END, schema="ShopLand")
    with psycopg.connect(dsn) as conn:
        public_tables = conn.execute(
            "select count(*) from pg_tables where schemaname = 'public'").fetchone()[0]
        orders = conn.execute('select count(*) from "ShopLand".orders').fetchone()[0]
    assert public_tables == 0 and orders == stats.rows["orders"] == 50
    assert broken_rules(make_conninfo(dsn, options='-csearch_path="ShopLand"')) == {}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"days": 0}, "--days"),
    ({"days": 2, "orders_per_day": 0}, "--orders-per-day"),
    ({"days": 2, "seed": -1}, "--seed"),
    ({"days": 2, "late_share": 1.5}, "late share"),
    ({"days": 2, "late_share": 0.6, "malformed_share": 0.6}, "add up to"),
])
def test_bad_inputs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(DemoInputError, match=message):
        seed_history("postgresql://nobody@127.0.0.1:1/none", **kwargs)


def _tidemark(dsn: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEMARK_SOURCE_URL": dsn, "TIDEMARK_LANDING_URL": dsn}
    return subprocess.run([TIDEMARK, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.skipif(TIDEMARK is None, reason="the tidemark console script is not installed")
def test_seed_from_the_command_line(fresh_db: Callable[[str], str]) -> None:
    dsn = fresh_db("seed_cli")
    done = _tidemark(dsn, "demo", "seed", "--days", "2", "--orders-per-day", "40", "--seed", "9",
                     "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"]["orders"] == 80 and report["seed"] == 9
    again = _tidemark(dsn, "demo", "seed", "--days", "2")
    assert again.returncode == 2 and "already hold rows" in again.stderr
    assert "Traceback" not in again.stderr
    bad = _tidemark(dsn, "demo", "seed", "--days", "0")
    assert bad.returncode == 2 and "--days must be" in bad.stderr
