"""SUBSCRIBE across a redeploy and a crash (streaming_views/sublog.py, subscribe.py): a
subscription follows a redeploy that keeps the view's columns (it receives exactly the rows the
redeploy changed), is ended with a message when the columns change, and after a server crash
(the log is unlogged) ends with a message; subscribing again starts with a snapshot."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streaming_views.deploy import deploy_embedded
from streaming_views.subscribe import Batch, Progress, SubscriptionEnded, subscribe_batches
from streaming_views.viewfile import parse_view_text
from tests.streaming_views.conftest import deploy_text
from tests.support import create_database, start_test_server

INNER = "select o.store, o.day, count(*) as n from sr.orders o group by o.store, o.day"
OUTER = "select d.store, sum(d.n) as n, count(*) as days from live.sr_daily d group by d.store"
BY_G = "select s.g, count(*) as n, sum(s.v) as total from sr.t s group by s.g"


class Subscriber:
    """A subscription in a thread: the rows it has (snapshot + diffs), its batches, its end."""

    def __init__(self, dsn: str, name: str) -> None:
        self.rows: Counter[tuple[Any, ...]] = Counter()
        self.batches: list[Batch] = []
        self.seq = -1
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(dsn, name))
        self.thread.start()

    def _run(self, dsn: str, name: str) -> None:
        try:
            for item in subscribe_batches(dsn, name, stop=self.stop, poll_s=0.02):
                if isinstance(item, Batch):
                    self.batches.append(item)
                    for row, diff in item.changes:
                        self.rows[row] += diff
                elif isinstance(item, Progress):
                    self.seq = item.seq
        except BaseException as exc:
            self.error = exc

    def wait(self, conn: psycopg.Connection, name: str, timeout: float = 60.0) -> None:
        """Until everything committed to ``live.<name>`` so far was received (or it ended)."""
        target = conn.execute("select seq from tidemark.live_changes where name = %s",
                              (name,)).fetchone()[0]
        deadline = time.monotonic() + timeout
        while self.seq < target and self.error is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def assert_has(self, conn: psycopg.Connection, name: str) -> None:
        self.wait(conn, name)
        assert self.error is None, self.error
        live = Counter(tuple(r) for r in conn.execute(f"select * from live.{name}").fetchall())
        assert +self.rows == live and all(v >= 0 for v in self.rows.values())


@pytest.fixture()
def tables(conn: psycopg.Connection) -> None:
    conn.execute("drop schema if exists sr cascade; create schema sr; "
                 "create table sr.orders (id int primary key, store int, day int); "
                 "create table sr.t (id int primary key, g int, v int)")
    conn.execute("insert into sr.orders select g, g % 7, g % 5 from generate_series(1, 300) g; "
                 "insert into sr.t select g, g % 10, g from generate_series(1, 200) g")


def test_a_reader_rebuilt_with_its_inner_view_keeps_its_subscribers(
        module_db: str, tables: None, conn: psycopg.Connection) -> None:
    deploy_text(module_db, "sr_daily", INNER)
    deploy_text(module_db, "sr_stores", OUTER)
    sub = Subscriber(module_db, "sr_stores")
    try:
        sub.assert_has(conn, "sr_stores")
        changed = INNER.replace("count(*) as n", "count(*) * 2 as n")
        results = deploy_embedded(module_db, [parse_view_text("sr_daily", changed),
                                              parse_view_text("sr_stores", OUTER)])
        assert {r.name: r.action for r in results} == {"sr_daily": "replaced",
                                                        "sr_stores": "rebuilt"}
        sub.assert_has(conn, "sr_stores")  # every n doubled: the redeploy's diff arrived
        conn.execute("insert into sr.orders values (1000, 3, 9), (1001, 8, 1)")
        sub.assert_has(conn, "sr_stores")  # and the commits after it
        conn.execute("delete from sr.orders where store = 3")
        sub.assert_has(conn, "sr_stores")
    finally:
        sub.close()


def test_a_redeploy_with_the_same_columns_sends_only_the_rows_it_changed(
        module_db: str, tables: None, conn: psycopg.Connection) -> None:
    deploy_text(module_db, "sr_by_g", BY_G)
    sub = Subscriber(module_db, "sr_by_g")
    try:
        sub.assert_has(conn, "sr_by_g")
        before = set(conn.execute("select * from live.sr_by_g").fetchall())
        narrower = BY_G.replace("from sr.t s", "from sr.t s where s.g <> 4 and s.id > 150 "
                                "or s.g < 3")
        assert deploy_text(module_db, "sr_by_g", narrower) == "replaced"
        after = set(conn.execute("select * from live.sr_by_g").fetchall())
        sub.assert_has(conn, "sr_by_g")
        redeploy = sub.batches[-1]
        assert sorted(redeploy.changes) == sorted(
            [(r, -1) for r in before - after] + [(r, 1) for r in after - before])
        assert len(redeploy.changes) < len(before) + len(after)  # unchanged rows not sent
        conn.execute("update sr.t set v = v + 1 where g = 1")
        sub.assert_has(conn, "sr_by_g")
        assert conn.execute("select count(*) from pg_trigger where tgname like %s",
                            ("tm_sr_by_g__%_sub_%",)).fetchone()[0] == 3
    finally:
        sub.close()
    assert conn.execute("select count(*) from pg_trigger where tgname like %s",
                        ("tm_sr_by_g__%_sub_%",)).fetchone()[0] == 0  # the last one left


def test_a_redeploy_that_changes_the_columns_ends_the_subscription(
        module_db: str, tables: None, conn: psycopg.Connection) -> None:
    deploy_text(module_db, "sr_cols", BY_G)
    sub = Subscriber(module_db, "sr_cols")
    try:
        sub.assert_has(conn, "sr_cols")
        deploy_text(module_db, "sr_cols", BY_G.replace("sum(s.v) as total", "max(s.v) as top"))
        sub.thread.join(10)
        assert isinstance(sub.error, SubscriptionEnded)
        assert str(sub.error).startswith(
            "live view 'sr_cols' was redeployed and its columns changed: subscribe again for "
            "a snapshot of its new definition (changes after seq ")
    finally:
        sub.close()


def test_a_view_broken_by_the_guard_ends_its_subscriptions(
        module_db: str, tables: None, conn: psycopg.Connection) -> None:
    deploy_text(module_db, "sr_daily", INNER)
    deploy_text(module_db, "sr_stores", OUTER)
    sub = Subscriber(module_db, "sr_stores")
    try:
        sub.assert_has(conn, "sr_stores")
        conn.execute("alter table sr.orders rename column day to day_of")  # breaks both views
        sub.thread.join(10)
        assert isinstance(sub.error, SubscriptionEnded)
        assert str(sub.error).startswith(
            "live view 'sr_stores' is broken (it reads live view sr_daily, which is broken "
            "(column day of sr.orders was renamed to day_of)")
        assert "subscribe again once 'tidemark views deploy' has repaired it" in str(sub.error)
    finally:
        sub.close()


def test_after_a_crash_the_subscriber_is_told_and_subscribes_again(tmp_path: Path) -> None:
    """The subscription log is UNLOGGED: a crash empties it. The subscriber's session ends
    with the crash, so it is told (never a silent gap), and a new subscription starts with a
    snapshot."""
    server = start_test_server(tmp_path / "home", roles=False)
    try:
        dsn = create_database(server, "crash")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # durable commits, as in production (the test servers run with them off)
            conn.execute("alter system set synchronous_commit = on")
            conn.execute("select pg_reload_conf()")
            conn.execute("create schema sr; create table sr.t (id int primary key, g int, v int)")
            conn.execute("insert into sr.t select g, g % 10, g from generate_series(1, 100) g")
            deploy_text(dsn, "crashy", BY_G)
            sub = Subscriber(dsn, "crashy")
            sub.assert_has(conn, "crashy")
            conn.execute("insert into sr.t values (500, 3, 7)")
            sub.assert_has(conn, "crashy")
            # a write just before the crash (its diff may still be in the log)
            conn.execute("insert into sr.t values (501, 4, 7)")
            victim = conn.execute("select pg_backend_pid()").fetchone()[0]
            os.kill(victim, signal.SIGKILL)  # a backend crash: the server resets everything
            with pytest.raises(psycopg.OperationalError):
                conn.execute("select 1")
        sub.thread.join(30)
        sub.close()
        assert isinstance(sub.error, SubscriptionEnded), sub.error
        assert "subscribe again, which starts with a snapshot" in str(sub.error)
        assert "lost its connection after seq" in str(sub.error)
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(dsn, autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn:
            assert conn.execute("select count(*) from tidemark.live_sub_log").fetchone()[0] == 0
            again = Subscriber(dsn, "crashy")
            try:
                again.assert_has(conn, "crashy")  # the snapshot
                assert again.batches[0].changes  # it was one
                conn.execute("delete from sr.t where g = 4")
                again.assert_has(conn, "crashy")
            finally:
                again.close()
    finally:
        server.stop()
