"""The OLTP load: paced at the asked rate, irregular events at the asked shares, deterministic."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from tidemark.demo.load import LoadStats, run_load
from tidemark.demo.seed import seed_history
from tidemark.errors import DemoInputError

TIDEMARK = shutil.which("tidemark")

# Every column that does not come from the wall clock, per table (for determinism).
STABLE_COLUMNS = {
    "orders": "order_id, store_id, customer_id, status, total_amount, delivery_notes",
    "order_items": "order_id, line_number, product_id, quantity, unit_price",
    "payments": "payment_id, order_id, payment_kind, method, card_fingerprint, amount, status",
    "deliveries": "delivery_id, order_id, store_id, courier_id, status,"
                  " dispatched_at is null, delivered_at is null",
    "customers": "customer_id, customer_name, email, city",
    "app_events": "outbox_id, event_id, event_type, customer_id, session_id, payload,"
                  " case when outbox_id = min(outbox_id) over (partition by event_id)"
                  " then received_at - event_time end",
}


def stable_rows(dsn: str) -> dict[str, list[tuple]]:
    """The wall-clock-free content of the shop (late lags included: they are drawn, not timed)."""
    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(sql.SQL("select {} from {} order by 1, 2").format(
            sql.SQL(columns), sql.Identifier(table))).fetchall()
            for table, columns in STABLE_COLUMNS.items()}


def table_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "select 'orders', count(*) from orders union all"
            " select 'refunds', count(*) from payments where payment_kind = 'refund' union all"
            " select 'payments', count(*) from payments where payment_kind = 'charge' union all"
            " select 'events', count(*) from app_events union all"
            " select 'items', count(*) from order_items").fetchall())


def test_load_keeps_the_asked_rate(fresh_db: Callable[[str], str],
                                   broken_rules: Callable[[str], dict]) -> None:
    dsn = fresh_db("load_rate")
    seen: list[LoadStats] = []
    stats = run_load(dsn, rate=500, duration_s=3, seed=1,
                     progress=lambda s: seen.append(LoadStats(**{
                         k: v for k, v in vars(s).items()})))
    assert stats.changes >= 1500  # the whole asked volume is sent...
    assert stats.elapsed_s == pytest.approx(3.0, abs=0.6)  # ...paced over the asked time
    assert stats.achieved_rate == pytest.approx(500, rel=0.2)
    assert not stats.stopped
    assert len(seen) >= 3 and seen[0].changes < seen[-1].changes == stats.changes
    assert seen[1].changes == pytest.approx(500 * seen[1].elapsed_s, rel=0.3)
    counts = table_counts(dsn)
    assert counts["orders"] == stats.orders > 0
    assert counts["payments"] == stats.payments and counts["refunds"] == stats.refunds
    assert counts["events"] == stats.events
    assert stats.deletes > 0 and stats.status_changes > 0
    assert broken_rules(dsn) == {}


def test_irregular_events_match_the_asked_shares(
        fresh_db: Callable[[str], str], event_shares: Callable[[str], dict]) -> None:
    dsn = fresh_db("load_shares")
    stats = run_load(dsn, rate=4000, duration_s=2, seed=2, late_share=0.2,
                     duplicate_share=0.1, malformed_share=0.15)
    measured = event_shares(dsn)
    assert measured["rows"] == stats.events
    assert measured["late"] == stats.late
    assert measured["duplicates"] == stats.duplicates
    assert measured["malformed"] == stats.malformed
    assert measured["events"] > 1000
    # 3-sigma binomial tolerance is below 0.04 at these volumes
    assert measured["late_share"] == pytest.approx(0.2, abs=0.04)
    assert measured["malformed_share"] == pytest.approx(0.15, abs=0.04)
    # re-emissions of the last few operations' events may fall after the run's end
    assert measured["duplicate_share"] == pytest.approx(0.1, abs=0.04)
    with psycopg.connect(dsn) as conn:
        lag_hours = conn.execute(
            "select min(received_at - event_time), max(received_at - event_time)"
            " from (select distinct on (event_id) * from app_events order by event_id, outbox_id)"
            " e where received_at - event_time > interval '1 minute'").fetchone()
        same_content = conn.execute(
            "select count(*) from app_events a join app_events b on a.event_id = b.event_id"
            " and a.outbox_id < b.outbox_id where (a.event_type, a.event_time, a.customer_id,"
            " a.session_id, a.payload) is distinct from (b.event_type, b.event_time,"
            " b.customer_id, b.session_id, b.payload)").fetchone()[0]
    assert timedelta(minutes=2) <= lag_hours[0] and lag_hours[1] <= timedelta(hours=6)
    assert same_content == 0


def test_same_seed_same_rows(fresh_db: Callable[[str], str]) -> None:
    first, second, other = fresh_db("det_a"), fresh_db("det_b"), fresh_db("det_c")
    a = run_load(first, rate=1000, duration_s=1.5, seed=5)
    b = run_load(second, rate=1000, duration_s=1.5, seed=5)
    c = run_load(other, rate=1000, duration_s=0.5, seed=6)
    assert a.changes == b.changes >= 1500
    assert {k: v for k, v in vars(a).items() if k != "elapsed_s"} == {
        k: v for k, v in vars(b).items() if k != "elapsed_s"}
    rows_a = stable_rows(first)
    assert rows_a == stable_rows(second)
    assert rows_a["orders"] and rows_a["app_events"]
    assert stable_rows(other)["orders"] != rows_a["orders"]
    assert c.transactions > 0


def test_a_restart_with_the_same_seed_never_reuses_an_event_id(
        fresh_db: Callable[[str], str], broken_rules: Callable[[str], dict]) -> None:
    dsn = fresh_db("load_restart")
    seed_history(dsn, days=1, orders_per_day=300, seed=42,
                 end=datetime.now(UTC) - timedelta(seconds=5))
    run_load(dsn, rate=1500, duration_s=1.0, seed=42)
    with psycopg.connect(dsn) as conn:
        seen = {r[0] for r in conn.execute("select event_id from app_events")}
        top = conn.execute("select max(outbox_id) from app_events").fetchone()[0]
    run_load(dsn, rate=1500, duration_s=1.0, seed=42)  # `tidemark up` again, same seed
    with psycopg.connect(dsn) as conn:
        new = conn.execute("select event_id, count(*) from app_events where outbox_id > %s"
                           " group by 1", (top,)).fetchall()
        changed = conn.execute(
            "select count(*) from app_events a join app_events b on a.event_id = b.event_id"
            " and a.outbox_id < b.outbox_id where (a.event_type, a.customer_id, a.session_id,"
            " a.payload) is distinct from (b.event_type, b.customer_id, b.session_id,"
            " b.payload)").fetchone()[0]
    assert new, "the second run wrote events"
    assert not seen & {event_id for event_id, _ in new}, "an event id of the first run came back"
    assert changed == 0, "an event id carries two different contents"
    assert broken_rules(dsn) == {}


def test_stop_event_ends_the_run_cleanly(fresh_db: Callable[[str], str],
                                         broken_rules: Callable[[str], dict]) -> None:
    dsn = fresh_db("load_stop")
    stop = threading.Event()
    threading.Timer(0.7, stop.set).start()
    started = time.monotonic()
    stats = run_load(dsn, rate=800, duration_s=60, seed=3, stop=stop)
    assert time.monotonic() - started < 30  # stopped, not the 60 s it was asked for
    assert stats.stopped and 0 < stats.changes < 800 * 60
    assert table_counts(dsn)["orders"] == stats.orders
    assert broken_rules(dsn) == {}


def test_the_load_rides_out_its_session_ended_by_the_server(
        fresh_db: Callable[[str], str], broken_rules: Callable[[str], dict],
        caplog: pytest.LogCaptureFixture) -> None:
    # A server restarting or crashing (a backend killed by the OOM killer resets them all) ends
    # the load's session; before, the load failed ("Did something else change the demo
    # tables? Re-seed ...") and `tidemark up` stopped the whole stack with it. Its own message
    # says so; psycopg's "error ignored terminating <psycopg.Pipeline [BAD]>: the connection
    # is lost" reached `tidemark up`'s terminal beside it, once per crash.
    caplog.set_level(logging.WARNING, logger="psycopg")
    dsn = fresh_db("load_outage")
    said: list[str] = []
    ended: dict[str, object] = {}

    def load() -> None:
        try:
            ended["stats"] = run_load(dsn, rate=600, duration_s=4, seed=4, on_outage=said.append)
        except Exception as exc:  # the test says what it was
            ended["error"] = exc

    worker = threading.Thread(target=load)
    worker.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while worker.is_alive() and time.monotonic() < deadline and not conn.execute(
                "select to_regclass('orders') is not null and exists (select from"
                " pg_stat_activity where datname = current_database() and pid <>"
                " pg_backend_pid() and state = 'idle')").fetchone()[0]:
            time.sleep(0.1)
        time.sleep(1.0)  # the load has committed for a while
        before = conn.execute("select count(*) from orders").fetchone()[0]
        killed = conn.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity"
                              " where datname = current_database() and pid <> pg_backend_pid()"
                              ).fetchone()[0]
    worker.join(60)
    assert killed == 1 and before > 0
    assert "error" not in ended, ended.get("error")
    stats = ended["stats"]
    assert stats.reconnects == 1 and not stats.stopped, stats
    assert len(said) == 2 and "went away" in said[0] and "reconnecting in 0.5 s" in said[0]
    assert said[1].startswith("Demo load: reconnected after") and stats.outage_s > 0
    assert stats.changes >= 600 * 4  # the whole asked volume, after the outage too
    assert stats.elapsed_s == pytest.approx(4.0, abs=1.0)  # the outage is not paced
    assert before < table_counts(dsn)["orders"] <= stats.orders
    assert broken_rules(dsn) == {}
    assert [r.getMessage() for r in caplog.records] == []


def test_load_carries_on_with_seeded_orders(fresh_db: Callable[[str], str],
                                            broken_rules: Callable[[str], dict]) -> None:
    dsn = fresh_db("load_after_seed")
    seed_history(dsn, days=1, orders_per_day=3000, seed=4,
                 end=datetime.now(UTC) - timedelta(seconds=5))
    with psycopg.connect(dsn) as conn:
        before = dict(conn.execute("select order_id, status from orders"
                                   " where status in ('placed', 'paid')").fetchall())
        top = conn.execute("select max(order_id) from orders").fetchone()[0]
    assert before  # the seed leaves orders in flight at its end
    stats = run_load(dsn, rate=1500, duration_s=1.5, seed=14)
    with psycopg.connect(dsn) as conn:
        after = dict(conn.execute("select order_id, status from orders where order_id = any(%s)",
                                  (list(before),)).fetchall())
        new_ids = conn.execute("select min(order_id) from orders where order_id > %s",
                               (top,)).fetchone()[0]
    assert any(after[o] != s for o, s in before.items())
    assert new_ids == top + 1 and stats.orders > 0
    assert broken_rules(dsn) == {}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rate": -5, "duration_s": 1}, "--rate"),
    ({"rate": 0, "duration_s": 1}, "--rate"),
    ({"rate": float("nan"), "duration_s": 1}, "--rate"),
    ({"rate": 10, "duration_s": 0}, "--duration"),
    ({"rate": 10, "duration_s": 1, "duplicate_share": -0.1}, "duplicate share"),
    ({"rate": 10, "duration_s": 1, "malformed_share": 2}, "malformed share"),
    ({"rate": 10, "duration_s": 1, "late_share": 0.5, "duplicate_share": 0.3,
      "malformed_share": 0.3}, "add up to"),
])
def test_bad_inputs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(DemoInputError, match=message):
        run_load("postgresql://nobody@127.0.0.1:1/none", **kwargs)


@pytest.mark.skipif(TIDEMARK is None, reason="the tidemark console script is not installed")
def test_load_from_the_command_line(fresh_db: Callable[[str], str]) -> None:
    dsn = fresh_db("load_cli")
    env = {**os.environ, "TIDEMARK_SOURCE_URL": dsn, "TIDEMARK_LANDING_URL": dsn}

    def tidemark(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([TIDEMARK, "demo", "load", *args], env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    done = tidemark("--rate", "400", "--duration", "1", "--seed", "3", "--late-share", "0.3",
                    "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["changes"] >= 400 and report["achieved_rate"] > 0 and report["late"] > 0
    human = tidemark("--rate", "300", "--duration", "1")
    assert human.returncode == 0 and "row changes in" in human.stdout
    for args, message in ((("--rate", "-1"), "--rate must be"),
                          (("--late-share", "0.7", "--malformed-share", "0.7"), "add up to")):
        bad = tidemark("--duration", "1", *args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_orders_beyond_allowed_lateness_land_on_yesterday(fresh_db) -> None:
    """A share of the load's orders is placed on yesterday, before today's midnight (UTC)."""
    dsn = fresh_db("late_orders")
    stats = run_load(dsn, rate=400, duration_s=3, seed=5, beyond_lateness_share=0.5)
    assert 0 < stats.late_orders < stats.orders
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with psycopg.connect(dsn) as conn:
        early = conn.execute("select count(*) from orders where placed_at < %s and"
                             " placed_at >= %s - interval '6 hours'",
                             (midnight, midnight)).fetchone()[0]
    assert early == stats.late_orders
