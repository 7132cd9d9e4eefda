"""The sliding-window path of :mod:`streaming_views.expiry` (engine 5): a temporal view is
maintained straight from its timed table — bulk statements and large ticks (the batch-row
paths), writes to the other table of a join (read through the window view), a tick waiting for a
write in flight, the expiry index, a keyless timed table, and the DDL guard following the timed
table. The oracle: the view equals its query with ``mz_now()`` replaced by the clock's time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from streaming_views import deploy
from streaming_views.expiry import clock, tick
from tests.streaming_views.conftest import assert_equal, deploy_text, write_views
from tidemark.stack.embedded import EmbeddedServer

T0 = (datetime.now(UTC) + timedelta(days=90)).replace(microsecond=0)  # ahead of the wall clock

JOINED = """select s.region, count(*) as n, sum(o.amount) as amount, max(o.placed_at) as last_at
from sw.orders o join sw.stores s on s.store_id = o.store_id
where o.status <> 'x' and mz_now() >= o.placed_at and mz_now() < o.placed_at + interval '5 minutes'
group by s.region
"""
# no other conjunct on the timed table: its one-row UPDATE reads the clock as a FROM item
WINDOWED = """select v.store_id, count(*) as n, sum(v.amount) as amount from sw.visits v
where mz_now() >= v.placed_at and mz_now() < v.placed_at + interval '5 minutes'
group by v.store_id
"""
KEYLESS = """select e.kind, count(*) as n from sw.events e
where mz_now() <= e.day + 2 and mz_now() >= e.day
group by e.kind
"""


@pytest.fixture(scope="module")
def sw(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("drop schema if exists sw cascade; create schema sw; "
                 "create table sw.stores (store_id int primary key, region text); "
                 "create table sw.orders (order_id int primary key, store_id int, amount numeric,"
                 " status text, placed_at timestamptz); "
                 "create table sw.events (kind text, day date); "  # keyless
                 "create table sw.visits (order_id int primary key, store_id int, "
                 "amount numeric, status text, placed_at timestamptz)")
    conn.execute("insert into sw.stores select i, 'r' || (i % 4) from generate_series(0, 19) i")
    return conn


def _now(dsn: str) -> datetime:
    with psycopg.connect(dsn, autocommit=True) as c:
        at = clock(c)
    assert at is not None
    return at


def test_bulk_writes_and_large_ticks_stay_exact(module_db: str, sw: psycopg.Connection) -> None:
    deploy_text(module_db, "first", "select s.store_id from sw.stores s")  # the tidemark schema
    tick(module_db, T0)
    # 6,000 orders over 30 minutes around the clock, in ONE statement (a batch row in the log)
    sw.execute("insert into sw.orders select i, i %% 20, i, case when i %% 7 = 0 then 'x' "
               "else 'ok' end, %s + (i - 3000) * interval '300 milliseconds' "
               "from generate_series(0, 5999) i", (T0,))
    assert deploy_text(module_db, "joined", JOINED) == "created"
    assert_equal(sw, "joined", JOINED)
    sw.execute("insert into sw.orders select i, i %% 20, 1, 'ok', %s + (i - 7000) * "
               "interval '100 milliseconds' from generate_series(6000, 8999) i", (T0,))
    assert_equal(sw, "joined", JOINED)
    steps = [timedelta(seconds=1), timedelta(minutes=2), timedelta(minutes=9),  # > 1,000 rows
             timedelta(0), timedelta(minutes=3)]
    for step in steps:
        result = tick(module_db, _now(module_db) + step)
        assert result is not None
        assert_equal(sw, "joined", JOINED)
        at = result.at
        # the other table of the join: its delta reads the orders through the window view
        sw.execute("update sw.stores set region = 'r' || ((store_id + %s) %% 3) "
                   "where store_id < 10", (int(step.total_seconds()) % 5,))
        # a bulk UPDATE moving 2,500 orders into the window, and a DELETE of some
        sw.execute("update sw.orders set placed_at = %s - (order_id %% 200) * interval "
                   "'1 second', amount = amount + 1 where order_id between 1000 and 3499", (at,))
        sw.execute("delete from sw.orders where order_id %% 97 = 0 and order_id < %s",
                   (int(at.timestamp()) % 9000,))
        assert_equal(sw, "joined", JOINED)
    tick(module_db, _now(module_db) + timedelta(hours=1))  # every order expires
    assert_equal(sw, "joined", JOINED)
    assert sw.execute("select n from live.joined").fetchall() == []


@pytest.mark.parametrize("write", [
    "insert into sw.orders values (900001, 1, 5, 'ok', %s)",
    # engine 23: the one-row UPDATE's log reads the clock in one sub-SELECT of the CTE per side
    # (orders: another conjunct) or as a FROM item (visits), locked FOR KEY SHARE either way
    "update sw.orders set amount = 7, placed_at = %s where order_id = 900002",
    "update sw.visits set amount = 7, placed_at = %s where order_id = 900002"])
def test_a_tick_waits_for_a_write_in_flight(module_db: str, sw: psycopg.Connection,
                                            write: str) -> None:
    table = write.split()[1]
    name, text = ("joined", JOINED) if table == "sw.orders" or write.startswith("insert") \
        else ("windowed", WINDOWED)
    deploy_text(module_db, name, text)
    at = _now(module_db) + timedelta(minutes=1)
    for target in ("sw.orders", "sw.visits"):
        sw.execute(f"insert into {target} values (900002, 2, 5, 'ok', %s) on conflict do nothing",
                   (at - timedelta(minutes=4, seconds=50),))
    tick(module_db, at)
    with psycopg.connect(module_db) as writer:  # a transaction left open
        writer.execute(write, (at - timedelta(minutes=4, seconds=59),))  # out at the next tick
        done: list[object] = []
        ticker = threading.Thread(target=lambda: done.append(
            tick(module_db, at + timedelta(seconds=30))))
        ticker.start()
        time.sleep(1.0)
        assert ticker.is_alive() and not done  # waits for the write in flight
        writer.commit()
    ticker.join(timeout=30)
    assert done and done[0] is not None
    assert_equal(sw, name, text)
    insert = write.startswith("insert")
    row = sw.execute(f"select amount from {'sw.orders' if insert else table} where order_id = %s",
                     (900001 if insert else 900002,)).fetchone()
    assert row == (5 if insert else 7,)  # the write committed


@pytest.mark.parametrize(("table", "change"), [
    ("orders", "amount = amount + 1"), ("orders", "status = 'x'"), ("orders", "status = 'ok'"),
    ("visits", "amount = amount + 1")])
def test_a_one_row_update_waits_for_a_tick_in_flight(module_db: str, sw: psycopg.Connection,
                                                     table: str, change: str) -> None:
    """The other side of the race: a tick left open holds the clock; a one-row UPDATE of a row
    the tick expires (or admits) waits for it, then logs at the new time — not at the time of
    its snapshot, which the tick's edges (taken before the UPDATE committed) would not see.
    Both forms of the one-row log (engine 23): the clock on demand in a sub-SELECT of the CTE
    (``joined``: another conjunct on orders), as a FROM item (``windowed``: none on visits)."""
    name, text = ("joined", JOINED) if table == "orders" else ("windowed", WINDOWED)
    deploy_text(module_db, name, text)
    at = _now(module_db) + timedelta(minutes=1)
    sw.execute(f"insert into sw.{table} values (900003, 3, 5, 'ok', %s), (900004, 4, 6, 'x', %s),"
               " (900005, 5, 8, 'ok', %s) on conflict (order_id) do update set "
               "amount = excluded.amount, status = excluded.status, "
               "placed_at = excluded.placed_at",
               (at - timedelta(minutes=4, seconds=50), at - timedelta(minutes=4, seconds=50),
                at + timedelta(seconds=20)))  # 900003/4 leave, 900005 enters at +30 s
    tick(module_db, at)
    ids = {"amount = amount + 1": (900003, 900005), "status = 'x'": (900003, 900005),
           "status = 'ok'": (900004,)}[change]
    with psycopg.connect(module_db) as ticker:  # a tick left open: it holds the clock
        ticker.execute("select tidemark.live_tick(%s)", (at + timedelta(seconds=30),))
        errors: list[BaseException] = []
        done: list[int] = []

        def write() -> None:
            try:
                with psycopg.connect(module_db, autocommit=True) as w:
                    for i in ids:
                        w.execute(f"update sw.{table} set {change} where order_id = %s",
                                  (i,))
                        done.append(i)
            except BaseException as exc:  # reported by the test's thread
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive() and not done  # the UPDATE waits for the tick in flight
        ticker.commit()
    writer.join(timeout=30)
    assert not errors and done == list(ids)
    assert_equal(sw, name, text)


def test_ticks_read_the_expiry_index(module_db: str, sw: psycopg.Connection) -> None:
    deploy_text(module_db, "joined", JOINED)
    index = sw.execute("select indexes from tidemark.live_temporal where view_name = 'joined'"
                       ).fetchone()[0]
    assert index == ['"sw"."tidemark_expiry__orders__placed_at"']
    fn = sw.execute("select p.oid::regprocedure::text from pg_proc p where proname ~ "
                    "'^joined__.*__tm_tick$'").fetchone()[0]
    body = sw.execute("select prosrc from pg_proc where oid = %s::regprocedure", (fn,)
                      ).fetchone()[0]
    edges = body[body.index("__e AS MATERIALIZED (") + len("__e AS MATERIALIZED ("):
                 body.index("), __n AS")]
    at = _now(module_db)
    later = at + timedelta(seconds=1)
    edges = edges.replace("p_prev", f"'{at.isoformat()}'::timestamptz")
    plan = sw.execute(f"explain {edges.replace('p_at', f'{later.isoformat()!r}::timestamptz')}"
                      ).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "tidemark_expiry__orders__placed_at" in text, text  # not a scan of every order


HISTORY = """select o.store_id, count(*) as n, max(o.placed_at) as last_at
from sw.history o
where mz_now() >= o.placed_at and mz_now() < o.placed_at + interval '5 minutes'
group by o.store_id
"""


def test_a_recompute_reads_the_window_not_the_history(module_db: str,
                                                      sw: psycopg.Connection) -> None:
    """Deleting a window's max recomputes its group through the window: that must read the rows
    near the window (the expiry index), not every row the group ever had — on main it read the
    store's whole history (35,676 rows per store of the demo at 100x, 172 ms a group)."""
    deploy_text(module_db, "first", "select s.store_id from sw.stores s")  # the tidemark schema
    tick(module_db, T0)
    at = _now(module_db)
    sw.execute("create table sw.history (order_id int primary key, store_id int,"
               " placed_at timestamptz)")
    sw.execute("insert into sw.history select i, i %% 2, %s - interval '30 days' + i * "
               "interval '1 minute' from generate_series(1, 20000) i", (at,))  # days ago
    sw.execute("insert into sw.history select 100000 + i, i %% 2, %s - i * interval '10 seconds'"
               " from generate_series(0, 9) i", (at,))  # in the window
    sw.execute("create index on sw.history (store_id)")
    sw.execute("analyze sw.history")
    assert deploy_text(module_db, "history", HISTORY) == "created"
    read = ("select pg_stat_get_xact_tuples_returned('sw.history'::regclass)"
            " + pg_stat_get_xact_tuples_fetched('sw.history'::regclass)")  # not yet flushed
    with sw.transaction():
        before = sw.execute(read).fetchone()[0]
        sw.execute("delete from sw.history where order_id = 100000")  # store 0's max
        sw.execute("set constraints all immediate")  # the view's apply, now
        rows = sw.execute(read).fetchone()[0] - before
    assert rows < 200, rows  # the window's rows, not store 0's 10,000 rows of history
    assert_equal(sw, "history", HISTORY)


def test_keyless_timed_table(module_db: str, sw: psycopg.Connection) -> None:
    day = (_now(module_db) + timedelta(days=1)).date()
    sw.execute("insert into sw.events select 'k' || (i %% 3), %s::date + (i %% 9) - 4 "
               "from generate_series(1, 300) i", (day,))
    sw.execute("insert into sw.events select 'k1', %s::date from generate_series(1, 5)", (day,))
    assert deploy_text(module_db, "keyless", KEYLESS) == "created"
    assert_equal(sw, "keyless", KEYLESS)
    for hours in (20, 30, 49, 100):
        tick(module_db, _now(module_db) + timedelta(hours=hours))
        sw.execute("delete from sw.events where ctid in (select ctid from sw.events limit 7)")
        sw.execute("insert into sw.events values ('k1', %s::date), ('k1', %s::date)",
                   (_now(module_db).date(), _now(module_db).date()))  # duplicates, no key
        assert_equal(sw, "keyless", KEYLESS)


def test_ddl_guard_follows_the_timed_table(module_db: str, sw: psycopg.Connection,
                                           tmp_path: Path) -> None:
    views = write_views(tmp_path / "g", joined=JOINED)
    deploy(module_db, views)
    # DDL on columns the view does not read is not held back by the view (nothing depends on them)
    sw.execute("alter table sw.orders add column note text")
    sw.execute("alter table sw.orders alter column note type varchar(20)")
    sw.execute("alter table sw.orders drop column note")
    sw.execute("insert into sw.orders values (909999, 2, 1, 'ok', %s)", (_now(module_db),))
    assert_equal(sw, "joined", JOINED)
    sw.execute("alter table sw.orders rename column placed_at to ordered_at")
    at = _now(module_db)
    sw.execute("insert into sw.orders values (910000, 1, 1, 'ok', %s)", (at,))  # still writes
    with pytest.raises(psycopg.Error, match="(?s)live view joined .*tidemark views deploy"):
        sw.execute("select * from live.joined").fetchall()
    tick(module_db, at + timedelta(seconds=5))  # the tick skips the broken view
    sw.execute("alter table sw.orders rename column ordered_at to placed_at")
    assert {r.name: r.action for r in deploy(module_db, views)}["joined"] == "repaired"
    assert_equal(sw, "joined", JOINED)


def test_engine_4_catalog_is_upgraded(pg: EmbeddedServer) -> None:
    """A landing database whose temporal views were deployed by engine 4 (copies of the timed
    table, ``live_temporal.pending`` NOT NULL): the next deploy migrates the catalog, drops the
    old copies with the old view, and ticks the new one."""
    from streaming_views.expiry import drop_inputs
    from tests.support import create_database
    dsn = create_database(pg, "test_expiry_upgrade")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("create schema tidemark; create schema tidemark_state; create schema sw; "
                  "create table sw.stores (store_id int primary key, region text); "
                  "create table sw.orders (order_id int primary key, store_id int, "
                  "amount numeric, status text, placed_at timestamptz)")
        c.execute("create table tidemark.live_temporal (suffix text primary key, view_name text "
                  "not null, visible text not null, pending text not null)")
        c.execute("create table tidemark_state.old__00000000__tv (like sw.orders); "
                  "create table tidemark_state.old__00000000__tp (like sw.orders); "
                  "insert into tidemark.live_temporal values ('old__00000000', 'old', "
                  "'old__00000000__tv', 'old__00000000__tp')")
        c.execute("insert into sw.stores values (1, 'r1')")
        c.execute("insert into sw.orders values (1, 1, 5, 'ok', %s)", (T0,))
        tick(dsn, T0)  # engine 4's rows are left alone by the new tick
        assert deploy_text(dsn, "joined", JOINED) == "created"
        assert_equal(c, "joined", JOINED)
        tick(dsn, T0 + timedelta(minutes=10))
        assert_equal(c, "joined", JOINED)
        with c.cursor() as cur:
            drop_inputs(cur, "old__00000000")  # what deploy does when it drops the old view
        assert c.execute("select count(*) from pg_class where relname ~ '^old__'"
                         ).fetchone()[0] == 0
        assert c.execute("select view_name from tidemark.live_temporal").fetchall() == [
            ("joined",)]
