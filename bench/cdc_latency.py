"""CDC latency: source commit → landing write, under a steady write rate.

Usage: python bench/cdc_latency.py [--rate R] [--seconds S] [--source-async-commit]
       (default 10,000 changes/s for 60 s)

A writer commits transactions of 50 changes (40 inserts, 10 updates) paced to R changes/s while
``ingestion.run`` streams into landing. Per change, latency = the changelog's ``_ingested_at``
(landing clock, inside the landing transaction) − ``_commit_at`` (source commit time); both
clocks are this machine's. Baseline for comparison: the writer's own commit round-trip time.
Last line: JSON {"bench": "cdc_latency", "p50_ms", "p95_ms", "p99_ms", "achieved_rate", ...}.

The source commits like a real source at PostgreSQL's defaults: the writer's session runs
``synchronous_commit = on`` (the server itself runs ``synchronous_commit = off`` and ``fsync =
off``, as the test server, so the flush is a write with no disk wait). ``--source-async-commit``
makes the writer commit with ``synchronous_commit = off`` instead: a commit then returns before
its WAL is flushed, and a logical walsender decodes only WAL that is flushed (PostgreSQL's
walsender.c: ``WalSndWaitForWal`` waits until the requested WAL is flushed before
``logical_read_xlog_page`` reads it), so each change waits for the source's WAL writer
(``wal_writer_delay``, 200 ms by default, or ``wal_writer_flush_after``) before any consumer,
Tidemark included, can see it. That wait is the source's setting, not Tidemark's: with the
async source p50/p99 grow by up to ~200 ms (a quiet run: p50 46.8, p99 176.4 ms, against p50
3.4, p99 39.5 ms at the default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg

from ingestion import catch_up, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

PER_TXN = 50


def write(src: str, rate: float, seconds: float, sync_commit: bool = True
          ) -> tuple[int, float, list[float]]:
    """Commit paced transactions; return (changes, elapsed seconds, commit round trips in ms)."""
    txns_per_s = rate / PER_TXN
    changes, next_id, rtts = 0, 1, []
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("set synchronous_commit = on" if sync_commit
                     else "set synchronous_commit = off")
        started = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) - started < seconds:
            due = started + n / txns_per_s
            if due > now:
                time.sleep(due - now)
            t0 = time.perf_counter()
            with conn.transaction():
                conn.execute("insert into ticks select g, 0, clock_timestamp() from"
                             " generate_series(%s::bigint, %s::bigint) g",
                             (next_id, next_id + 39))
                if next_id > 100:
                    conn.execute("update ticks set v = v + 1 where id between %s and %s",
                                 (next_id - 100, next_id - 91))
                    changes += 10
            rtts.append((time.perf_counter() - t0) * 1000)
            changes += 40
            next_id += 40
            n += 1
        return changes, time.perf_counter() - started, rtts


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--source-async-commit", action="store_true",
                        help="the source commits with synchronous_commit = off: every change"
                             " then also waits for the source's WAL writer delay (200 ms by"
                             " default) before walsender can decode the unflushed WAL")
    args = parser.parse_args()
    with bench_server() as (src, land):
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("create table ticks (id bigint primary key, v int not null,"
                         " created_at timestamptz not null)")
        catch_up(src, land, "bench")
        stop = threading.Event()
        runner = threading.Thread(target=run, args=(src, land, "bench"), kwargs={"stop": stop})
        runner.start()
        try:
            changes, elapsed, rtts = write(src, args.rate, args.seconds,
                                          not args.source_async_commit)
            catch_up_deadline = time.monotonic() + 120
            while time.monotonic() < catch_up_deadline:
                with psycopg.connect(land) as conn:
                    done = conn.execute("select count(*) from cdc.bench__ticks").fetchone()[0]
                if done >= changes:
                    break
                time.sleep(0.2)
        finally:
            stop.set()
            runner.join(60)
        with psycopg.connect(land) as conn:
            lat = [r[0] for r in conn.execute(
                "select extract(epoch from _ingested_at - _commit_at) * 1000"
                " from cdc.bench__ticks where _op <> 'r'")]
    lat = [float(x) for x in lat]
    result = {"bench": "cdc_latency", "changes": changes, "landed": len(lat),
              "achieved_rate": round(changes / elapsed), "p50_ms": round(pct(lat, 50), 1),
              "p95_ms": round(pct(lat, 95), 1), "p99_ms": round(pct(lat, 99), 1),
              "max_ms": round(max(lat), 1),
              "source_synchronous_commit": "off" if args.source_async_commit else "on",
              "baseline_source_commit_p50_ms": round(statistics.median(rtts), 2)}
    print(f"{changes} changes at {result['achieved_rate']}/s; latency p50 {result['p50_ms']} ms,"
          f" p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
