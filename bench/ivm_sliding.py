"""``ivm_vs_refresh.py --view sliding_5min``: a five-minute sliding window (temporal filter).

Workload: ``bench.orders`` (N rows, one every ``--spacing-ms``, so the window holds
``--window-minutes`` x 60,000 / spacing rows) joined to ``bench.stores`` (1,000 rows), per
(region, store), with ``mz_now() >= placed_at and mz_now() < placed_at + interval '5 minutes'``
(or ``--window-minutes``). The clock stands at
the newest order. In one run, on one throw-away embedded PostgreSQL:

* median single-row UPDATE of an order inside the window, triggers off (no view) / on (live
  view), alternating in blocks; a 10,000-row UPDATE inside the window (rows/s) likewise;
* median ``REFRESH MATERIALIZED VIEW`` of the same query at the clock's time, before the view
  is deployed (``refresh_ms``) and after (``refresh_indexed_ms``: the view's expiry index on
  ``placed_at``; the query as written still reads every order: PostgreSQL does not invert
  ``placed_at + interval > t``) and of the window written ``placed_at > t - interval``
  (``refresh_window_ms``: the index bounds the REFRESH to the window's rows);
* the tick: ``tidemark.live_tick()`` moving the clock so that 0, 1k, 10k and 100k rows expire
  (ms, and µs per expired row), with the window's size (rows valid) before each tick;
* the live view is verified equal to its query at the clock's time after the updates and after
  every tick. Last line: JSON.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from streaming_views.deploy import deploy_embedded, rebuild
from streaming_views.expiry import tick
from streaming_views.temporal import oracle_query
from streaming_views.verify import diff_rows
from streaming_views.viewfile import parse_view_text

BULK = 10_000
VIEW_TEMPLATE = """-- @keys: region, store_id
select s.region, s.store_id, count(*) as order_count, sum(o.amount) as revenue,
       avg(o.amount) as avg_amount
from bench.orders o join bench.stores s on s.store_id = o.store_id
where o.status <> 'cancelled'
  and mz_now() >= o.placed_at and mz_now() < o.placed_at + interval '{minutes:g} minutes'
group by s.region, s.store_id"""
VIEW = VIEW_TEMPLATE.format(minutes=5)
NAME = "bench_sliding_5min"
EXPIRING = (0, 1_000, 10_000, 100_000)


def _place(conn: psycopg.Connection, base: datetime, spacing_ms: float) -> None:
    conn.execute("update bench.orders set placed_at = %s + order_id * %s * interval "
                 "'1 millisecond'", (base, spacing_ms))
    conn.execute("vacuum analyze bench.orders")


def _single(conn: psycopg.Connection, rng: random.Random, lo: int, hi: int) -> float:
    start = time.perf_counter()
    conn.execute("update bench.orders set amount = amount + 0.01 where order_id = %s",
                 (rng.randint(lo, hi),), prepare=True)
    return time.perf_counter() - start


def _bulk(conn: psycopg.Connection, lo: int) -> float:
    start = time.perf_counter()
    cur = conn.execute("update bench.orders set amount = amount + 0.01 "
                       "where order_id between %s and %s", (lo, lo + BULK - 1))
    return cur.rowcount / (time.perf_counter() - start)


def _check(conn: psycopg.Connection, view: str) -> None:
    extra, missing = diff_rows(conn, NAME, view)
    if extra or missing:
        raise SystemExit(f"live view differs from its query: {extra[:3]} {missing[:3]}")


def _refresh(conn: psycopg.Connection, query: str) -> float:
    """Median ms of ``REFRESH MATERIALIZED VIEW`` of ``query`` (three runs)."""
    conn.execute("drop materialized view if exists bench.mv")
    conn.execute(f"create materialized view bench.mv as {query}")  # type: ignore[arg-type]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        conn.execute("refresh materialized view bench.mv")
        times.append(time.perf_counter() - start)
    conn.execute("drop materialized view bench.mv")
    return statistics.median(times) * 1000


def run(dsn: str, conn: psycopg.Connection, rows: int, updates: int, spacing_ms: float,
        load: Any, rounds: int = 6, window_minutes: float = 5) -> dict[str, Any]:
    """The measurements (see the module docstring); ``load`` fills bench.orders/stores;
    ``window_minutes``: the window's length (the view's interval)."""
    view = VIEW_TEMPLATE.format(minutes=window_minutes)
    from ivm_vs_refresh import _triggers  # the view's triggers off (no view) / on
    t0 = time.perf_counter()
    load(conn, rows)
    base = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    _place(conn, base, spacing_ms)
    print(f"loaded {rows:,} orders in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    clock = base + timedelta(milliseconds=rows * spacing_ms)
    deploy_embedded(dsn, [parse_view_text("bench_clock", "select s.store_id from "
                                          "bench.stores s where s.store_id = 0")])
    tick(dsn, clock)
    window = int(window_minutes * 60_000 / spacing_ms)
    lo, hi = rows - window + 1, rows
    query = oracle_query(view, clock)
    refresh_ms = _refresh(conn, query)  # the orders as loaded: no index on placed_at
    t0 = time.perf_counter()
    deploy_embedded(dsn, [parse_view_text(NAME, view)])
    build_s = time.perf_counter() - t0
    refresh_indexed_ms = _refresh(conn, query)  # with the view's expiry index on placed_at
    # the same window written so that the index bounds it (placed_at > t - 5 min): PostgreSQL
    # does not invert 'placed_at + interval > t', so the REFRESH above reads every order
    sargable = oracle_query(view.replace(
        f"mz_now() < o.placed_at + interval '{window_minutes:g} minutes'",
        f"o.placed_at > mz_now() - interval '{window_minutes:g} minutes'"), clock)
    refresh_window_ms = _refresh(conn, sargable)
    rng = random.Random(1)
    single: dict[bool, list[float]] = {False: [], True: []}
    bulk: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for on in (False, True):
            _triggers(conn, on)
            for _ in range(10):
                _single(conn, rng, lo, hi)
            single[on] += [_single(conn, rng, lo, hi) for _ in range(updates // rounds)]
    for _ in range(3):
        for on in (False, True):
            _triggers(conn, on)
            bulk[on].append(_bulk(conn, rng.randint(lo, hi - BULK)))
    _triggers(conn, True)
    rebuild(dsn, NAME)  # writes made with the triggers off
    _check(conn, view)
    ticks = []
    at = clock
    for k in EXPIRING:
        held = conn.execute("select count(*) from bench.orders where placed_at <= %s and "
                            "placed_at + %s * interval '1 minute' > %s",
                            (at, window_minutes, at)).fetchone()[0]
        at += timedelta(milliseconds=k * spacing_ms)
        start = time.perf_counter()
        result = tick(conn, at)
        elapsed = time.perf_counter() - start
        assert result is not None
        _check(conn, view)
        ticks.append({"expiring": result.rows, "visible_before": held,
                      "tick_ms": round(elapsed * 1000, 2),
                      "us_per_row": round(elapsed * 1e6 / result.rows, 2) if result.rows
                      else None})
    no_view_ms = statistics.median(single[False]) * 1000
    live_ms = statistics.median(single[True]) * 1000
    return {
        "bench": "ivm_vs_refresh", "view": "sliding_5min", "rows": rows, "window_rows": window,
        "window_minutes": window_minutes,
        "update_no_view_ms": round(no_view_ms, 4), "update_live_ms": round(live_ms, 4),
        "refresh_ms": round(refresh_ms, 1), "refresh_over_live": round(refresh_ms / live_ms, 1),
        "refresh_indexed_ms": round(refresh_indexed_ms, 1),
        "refresh_indexed_over_live": round(refresh_indexed_ms / live_ms, 1),
        "refresh_window_ms": round(refresh_window_ms, 1),
        "refresh_window_over_live": round(refresh_window_ms / live_ms, 1),
        "live_over_no_view": round(live_ms / no_view_ms, 2),
        "bulk_no_view_rows_per_s": round(statistics.median(bulk[False])),
        "bulk_live_rows_per_s": round(statistics.median(bulk[True])),
        "initial_build_s": round(build_s, 2), "ticks": ticks,
    }


def report(result: dict[str, Any]) -> None:
    """Print the figures (stderr) and the JSON line (stdout)."""
    for key, value in result.items():
        if key != "ticks":
            print(f"{key:>26}: {value}", file=sys.stderr)
    for t in result["ticks"]:
        print(f"{'tick':>26}: {t['expiring']:>7,} rows expiring of {t['visible_before']:,} "
              f"visible: {t['tick_ms']} ms ({t['us_per_row']} us/row)", file=sys.stderr)
    print(json.dumps(result))
