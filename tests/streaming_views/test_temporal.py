"""Temporal filters (``mz_now()``, ``@retention``) on the embedded engine: refusals, the tick,
exactness at every tick against the query with ``mz_now()`` replaced by the tick's time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from streaming_views.analyzer import analyze
from streaming_views.deploy import deploy_embedded
from streaming_views.errors import UnsupportedViewError
from streaming_views.expiry import tick
from streaming_views.temporal import oracle_query
from streaming_views.viewfile import parse_view_text
from tests.streaming_views.conftest import assert_equal, deploy_text

# the clock never goes back: the tests' times are ahead of the wall clock
T0 = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)

SLIDING = """select e.kind, count(*) as n, sum(e.amount) as amount
from tm.events as e
where mz_now() >= e.ts and mz_now() < e.ts + interval '5 minutes'
group by e.kind
"""


@pytest.fixture(scope="module")
def tm(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("create schema if not exists tm")
    conn.execute("create table if not exists tm.events (id bigint primary key, kind text, "
                 "amount numeric, ts timestamptz, local_ts timestamp)")
    conn.execute("create table if not exists tm.kinds (kind text primary key, label text)")
    return conn


def _refusal(text: str) -> UnsupportedViewError:
    with pytest.raises(UnsupportedViewError) as info:
        analyze(parse_view_text("v", text))
    return info.value


@pytest.mark.parametrize(("text", "construct"), [
    ("select e.id, mz_now() as t from tm.events e", "mz_now() in the SELECT list"),
    ("select e.kind, count(*) from tm.events e group by 1 having mz_now() > max(e.ts)",
     "mz_now() in HAVING"),
    ("select e.id from tm.events e where mz_now() <= e.ts or e.id = 1", "mz_now() under OR"),
    ("select e.id from tm.events e where not (mz_now() <= e.ts)", "mz_now() under NOT"),
    ("select e.id from tm.events e where mz_now() - interval '5 minutes' <= e.ts",
     "arithmetic on mz_now()"),
    ("select e.id from tm.events e where mz_now() <> e.ts", "mz_now() <>"),
    ("select e.id from tm.events e where date_trunc('day', mz_now()) = e.ts",
     "arithmetic on mz_now()"),
    ("select e.id from tm.events e where (mz_now() <= e.ts) is true",
     "mz_now() inside an expression"),
    ("select e.id from tm.events e join tm.kinds k on k.kind = e.kind "
     "where mz_now() <= e.ts + (k.label)::interval", "temporal filter over two tables"),
    ("select e.id from tm.events e where mz_now() <= timestamptz '2030-01-01'",
     "temporal filter without a column"),
    ("select count(*) filter (where mz_now() <= e.ts) from tm.events e",
     "mz_now() in an aggregate FILTER"),
    ("select e.id from tm.events e join tm.kinds k on k.kind = e.kind and mz_now() <= e.ts",
     "mz_now() in a join condition"),
])
def test_refusals_name_the_construct(text: str, construct: str) -> None:
    err = _refusal(text)
    assert err.construct == construct, str(err)
    assert "v.sql:1:" in str(err)


def test_allowed_forms_become_bounds() -> None:
    an = analyze(parse_view_text("v", "select e.id from tm.events e where e.id > 0 and "
                                 "mz_now() between e.ts and e.ts + interval '1 hour' "
                                 "and e.ts <= mz_now()"))
    assert an.temporal is not None
    assert [b.kind for b in an.temporal.bounds] == ["from", "until", "from"]
    assert (an.tables[0].schema, an.tables[0].name) == ("tm", "events")  # its triggers there


def test_oracle_query_is_the_query_at_each_time() -> None:
    """The query is parsed once per definition (a template at a placeholder time): each call
    still reads its own time, ``@retention`` included, and a definition holding the
    placeholder's text is answered without the template."""
    retained = "-- @retention: e.local_ts 1 hour\nselect e.kind from tm.events e\n"
    odd = "select e.id, 'tidemark-oracle-clock' as n from tm.events e where mz_now() < e.ts"
    for at in (T0, T0 + timedelta(hours=5, microseconds=250)):
        clock = f"CAST('{at.isoformat()}' AS timestamptz)"
        assert oracle_query(SLIDING, at).count(clock) == 2
        assert f"WHERE {clock} <= " in oracle_query(retained, at)
        assert oracle_query(odd, at) == ("SELECT e.id, 'tidemark-oracle-clock' AS n FROM "
                                         f"tm.events AS e WHERE {clock} < e.ts")


def test_sliding_window_is_exact_at_each_tick_and_bounded(module_db: str,
                                                          tm: psycopg.Connection) -> None:
    tm.execute("truncate tm.events")
    deploy_text(module_db, "first", "select k.kind from tm.kinds k")  # the tidemark schema
    tick(module_db, T0)
    rows = [(i, "ab"[i % 2], i, T0 + timedelta(seconds=10 * i)) for i in range(-40, 60)]
    tm.cursor().executemany("insert into tm.events (id, kind, amount, ts) values "
                            "(%s, %s, %s, %s)", rows)
    assert deploy_text(module_db, "sliding", SLIDING) == "created"
    assert_equal(tm, "sliding", SLIDING)
    at = T0
    for step in range(12):
        at += timedelta(seconds=37)
        result = tick(module_db, at)
        assert result is not None and result.at == at
        assert_equal(tm, "sliding", SLIDING)
        # writes between ticks: past (expired already), present and future rows
        base = 1000 + step * 10
        tm.execute("insert into tm.events values (%s, 'a', 1, %s), (%s, 'b', 2, %s), "
                   "(%s, 'a', 3, %s)", (base, at - timedelta(minutes=9), base + 1, at,
                                        base + 2, at + timedelta(minutes=1)))
        tm.execute("update tm.events set ts = ts + interval '30 seconds' where id = %s",
                   (step,))
        tm.execute("delete from tm.events where id = %s", (base - 9,))
        assert_equal(tm, "sliding", SLIDING)
    visible = tm.execute("select count(*) from tidemark_state.\"sliding__\" || ''"
                         if False else "select count(*) from tidemark.live_temporal t "
                         "where t.view_name = 'sliding'").fetchone()[0]
    assert visible == 1
    # bounded: the view counts the window's rows only, and no copy of them is kept
    held = tm.execute("select count(*) from tm.events e where e.ts <= %s and "
                      "e.ts + interval '5 minutes' > %s", (at, at)).fetchone()[0]
    live = tm.execute("select sum(n) from live.sliding").fetchone()[0]
    assert held == live
    assert tm.execute("select count(*) from pg_class where relname ~ '^sliding__.*__t[vp]$'"
                      ).fetchone()[0] == 0


def test_time_does_not_go_backwards(module_db: str, tm: psycopg.Connection) -> None:
    now = tick(module_db, T0 + timedelta(days=1))
    assert now is not None
    back = tick(module_db, T0)
    assert back is not None and back.at == now.at and back.rows == 0


def test_retention_applies_on_the_embedded_engine(module_db: str,
                                                  tm: psycopg.Connection) -> None:
    text = ("-- @retention: e.local_ts 1 hour\nselect e.kind, count(*) as n from tm.events e "
            "group by e.kind\n")
    tm.execute("truncate tm.events")
    at = T0 + timedelta(days=2)
    tick(module_db, at)
    tm.execute("insert into tm.events (id, kind, local_ts) select g, 'k', %s::timestamp - "
               "g * interval '1 minute' from generate_series(0, 99) g",
               (at.replace(tzinfo=None),))
    deploy_embedded(module_db, [parse_view_text("kept", text)])
    assert tm.execute("select n from live.kept").fetchone()[0] == 61
    assert_equal(tm, "kept", text)
    tick(module_db, at + timedelta(minutes=30))
    assert tm.execute("select n from live.kept").fetchone()[0] == 31
    assert_equal(tm, "kept", text)


def test_redeploy_and_drop_remove_the_inputs(module_db: str, tm: psycopg.Connection) -> None:
    deploy_embedded(module_db, [parse_view_text("gone", SLIDING)])
    deploy_embedded(module_db, [parse_view_text("gone", SLIDING + "having count(*) > 0\n")])
    names = [r[0] for r in tm.execute("select visible from tidemark.live_temporal where "
                                      "view_name = 'gone'")]
    assert len(names) == 1
    inputs = tm.execute("select relname, relkind from pg_class where relname ~ "
                        "'^gone__.*__t[vp]$'").fetchall()
    assert inputs == []  # no copies of the timed table's rows, no view over it
    # one trigger level: the view's own log triggers on the timed table, no follow triggers
    triggers = [r[0] for r in tm.execute("select tgname from pg_trigger where tgrelid = "
                                         "'tm.events'::regclass and tgname ~ '^(tm_)?gone'")]
    assert triggers and not [t for t in triggers if "__tm_" in t], triggers
    indexes = tm.execute("select indexes from tidemark.live_temporal where view_name = 'gone'"
                         ).fetchone()[0]
    assert indexes == ['"tm"."tidemark_expiry__events__ts"']  # the expiry index on e.ts
    tm.execute("select 1")
    from streaming_views.catalog import read_catalog
    from streaming_views.deploy import drop_view
    with psycopg.connect(module_db, autocommit=True) as other, other.transaction():
        drop_view(other, read_catalog(other, target="embedded", name="gone")[0])
    assert tm.execute("select count(*) from pg_class where relname ~ '^gone__'").fetchone()[0] == 0
    assert tm.execute("select count(*) from pg_trigger where tgname ~ '^gone__'").fetchone()[0] == 0


def test_tick_command_once_and_every_second(module_db: str, tm: psycopg.Connection) -> None:
    import json
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from tidemark.cli.main import app
    result = CliRunner().invoke(app, ["views", "tick", "--dsn", module_db, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["at"] is not None  # the clock is ahead: it stays there
    tm.execute("update tidemark.live_clock set now = clock_timestamp() - interval '1 minute'")
    child = subprocess.Popen([sys.executable, "-m", "tidemark.cli.main", "views", "tick",
                              "--every", "1", "--dsn", module_db],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # starting Python and tidemark: seconds under load
        lag = None
        while time.monotonic() < deadline:
            lag = tm.execute("select extract(epoch from clock_timestamp() - now) from "
                             "tidemark.live_clock").fetchone()[0]
            if lag < 1.5:
                break
            time.sleep(0.2)
        assert lag is not None and lag < 1.5, f"clock {lag} s behind"
        # and it keeps ticking: the clock moves on again (how soon is the machine's load's)
        caught_up = tm.execute("select now from tidemark.live_clock").fetchone()[0]
        moved, deadline = False, time.monotonic() + 60
        while not moved and time.monotonic() < deadline:
            time.sleep(0.2)
            moved = tm.execute("select now > %s from tidemark.live_clock",
                               (caught_up,)).fetchone()[0]
        assert moved, f"the clock stayed at {caught_up}"
    finally:
        child.send_signal(signal.SIGTERM)
        out = child.communicate(timeout=10)[0].decode()
    assert child.returncode == 0, out
    assert "Traceback" not in out


def test_demo_windows_stay_bounded(module_db: str, tm: psycopg.Connection) -> None:
    from streaming_views import deploy, load_views, verify
    from tidemark.demo.seed import seed_history
    end = (datetime.now(UTC) + timedelta(days=60)).replace(second=0, microsecond=0)
    seed_history(module_db, days=1, orders_per_day=2000, seed=5, end=end, schema="shop")
    tick(module_db, end - timedelta(hours=3))
    deploy(module_db)
    names = {v.name for v in load_views()}
    assert "store_orders_last_5_minutes" in names
    at = end - timedelta(hours=3)
    for _ in range(6):
        at += timedelta(minutes=17, seconds=3)
        tick(module_db, at)
        bad = [v for v in verify(module_db) if not v.ok]
        assert not bad, bad
        held = tm.execute("select count(*), coalesce(sum(order_count), 0) from "
                          "live.store_orders_last_5_minutes").fetchone()
        window = tm.execute("select count(distinct store_id), count(*) from shop.orders where "
                            "status <> 'cancelled' and placed_at <= %s and placed_at > %s",
                            (at, at - timedelta(minutes=5))).fetchone()
        assert tuple(held) == tuple(window)  # one row per store of the window's orders, no more
        state = tm.execute("select count(*) from tidemark_state.\"" + tm.execute(
            "select suffix from tidemark.live_temporal where view_name = "
            "'store_orders_last_5_minutes'").fetchone()[0] + '"').fetchone()[0]
        assert state == held[0]  # the state keeps no store whose orders all expired
    tick(module_db, end + timedelta(days=8))
    for view in ("store_orders_last_5_minutes", "store_revenue_per_minute",
                 "card_payments_recent", "store_cancellation_rate", "late_deliveries_daily",
                 "active_carts"):
        assert tm.execute(f"select count(*) from live.{view}").fetchone()[0] == 0, view
    assert all(v.ok for v in verify(module_db))


@pytest.mark.parametrize("text", [
    # Materialize's documented hopping window: each row in every window starting in the last 5
    # minutes, a window start per hop from generate_series in FROM
    "select w.window_start, count(*) as n from tm.events e, generate_series(date_bin("
    "'1 minute', e.ts, timestamptz '2000-01-01'), e.ts, interval '-1 minute') as "
    "w(window_start) where mz_now() >= w.window_start and mz_now() < w.window_start + "
    "interval '5 minutes' group by 1",
    "select w.s, count(*) as n from tm.events e cross join lateral generate_series(e.ts - "
    "interval '4 minutes', e.ts, interval '1 minute') as w(s) where mz_now() <= e.ts + "
    "interval '10 minutes' group by 1",
])
def test_hopping_windows_are_refused_with_a_rewrite(text: str) -> None:
    err = _refusal(text)
    assert err.construct == "function in FROM", str(err)
    assert "hopping window over generate_series" in str(err)
    assert "date_bin" in str(err)  # the rewrite: per-hop buckets with a temporal filter
