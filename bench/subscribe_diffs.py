"""SUBSCRIBE from the maintenance delta against the old re-read-and-diff, on a 1M-row view.

Workload (issue 13 item 6): ``bench.items`` (N rows, default 1,000,000) and the live view
``per_item`` (one row per item: ``k, count(*), sum(v)`` grouped by the key — N rows). On one
throw-away embedded PostgreSQL, per commit of an UPDATE of 1 row and of 10,000 rows:

* **new**: time from the writer's commit to the subscriber holding the commit's batch and its
  progress message (:func:`streaming_views.subscribe.subscribe_batches`, polling every 1 ms);
* **old**: time from the same commit to the old subscriber (issue 9's ``subscribe``: re-read
  the whole view in a REPEATABLE READ transaction and diff it with the previous read in Python)
  holding the same changes — which are checked equal to the new batch, commit by commit;
* the writer's own commit time with a subscriber (subscription triggers on the state table)
  and without one.

Prints medians, the ratios old / new, the load average before and after; last line: JSON.

Usage: python bench/subscribe_diffs.py [--rows N] [--single K] [--bulk K] [--dsn URL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivm_vs_refresh import server

from streaming_views.deploy import deploy_embedded
from streaming_views.subscribe import Batch, Progress, subscribe_batches
from streaming_views.viewfile import parse_view_text

VIEW = "select i.k, count(*) as n, sum(i.v) as total from bench.items i group by i.k"
BULK = 10_000


def load(conn: psycopg.Connection, rows: int) -> None:
    conn.execute("drop schema if exists bench cascade; create schema bench")
    conn.execute("create table bench.items (k bigint primary key, v bigint not null)")
    conn.execute("insert into bench.items select i, i %% 1000 from generate_series(1, %s) i",
                 (rows,))
    conn.execute("vacuum analyze bench.items")


def reread(conn: psycopg.Connection) -> Counter:
    """The old subscriber's read: the whole view, as a multiset of rows."""
    with conn.transaction():
        conn.execute("set transaction isolation level repeatable read")
        rows = conn.execute("select * from live.per_item").fetchall()
    return Counter(tuple(r) for r in rows)


def old_diff(before: Counter, after: Counter) -> Counter:
    """The old subscriber's diff (row -> +n / -n)."""
    out: Counter = Counter()
    for row in set(before) | set(after):
        if after[row] != before[row]:
            out[row] = after[row] - before[row]
    return out


def change(conn: psycopg.Connection, rng: random.Random, rows: int, size: int) -> float:
    """Commit an UPDATE of ``size`` consecutive items; return the commit's duration (s)."""
    lo = rng.randint(1, rows - size)
    started = time.perf_counter()
    conn.execute("update bench.items set v = v + 1 where k between %s and %s",
                 (lo, lo + size - 1))
    return time.perf_counter() - started


def run(dsn: str, rows: int, single: int, bulk: int) -> dict[str, Any]:
    rng = random.Random(13)
    with psycopg.connect(dsn, autocommit=True) as conn:
        load(conn, rows)
        deploy_embedded(dsn, [parse_view_text("per_item", VIEW)])
        conn.execute("vacuum analyze")
        reader = psycopg.connect(dsn, autocommit=True)
        current = reread(reader)
        started = time.perf_counter()
        items = subscribe_batches(dsn, "per_item", poll_s=0.001)
        snapshot = next(items)
        assert isinstance(snapshot, Batch) and len(snapshot.changes) == rows
        first = next(items)
        assert isinstance(first, Progress)
        subscribe_s = time.perf_counter() - started
        seq = first.seq
        result: dict[str, Any] = {"rows": rows, "subscribe_start_s": subscribe_s}
        for label, size, repeats in (("single", 1, single), ("bulk", BULK, bulk)):
            new_s, old_s, writer_s = [], [], []
            for _ in range(repeats):
                writer_s.append(change(conn, rng, rows, size))
                t0 = time.perf_counter()
                got: Counter = Counter()
                while True:
                    item = next(items)
                    if isinstance(item, Batch):
                        got.update(dict(item.changes))
                    elif item.seq > seq:
                        seq = item.seq
                        break
                new_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                after = reread(reader)
                expected = old_diff(current, after)
                old_s.append(time.perf_counter() - t0)
                current = after
                assert +got == +expected and -got == -expected, "new and old changes differ"
                assert sum(abs(d) for d in got.values()) == 2 * size
            result[label] = {"size": size, "commits": repeats,
                             "new_ms": 1000 * statistics.median(new_s),
                             "old_ms": 1000 * statistics.median(old_s),
                             "writer_subscribed_ms": 1000 * statistics.median(writer_s)}
            result[label]["ratio_old_new"] = result[label]["old_ms"] / result[label]["new_ms"]
        items.close()  # the last subscriber: the triggers go
        for label, size, repeats in (("single", 1, single), ("bulk", BULK, bulk)):
            plain = [change(conn, rng, rows, size) for _ in range(repeats)]
            result[label]["writer_alone_ms"] = 1000 * statistics.median(plain)
            result[label]["writer_ratio"] = (result[label]["writer_subscribed_ms"]
                                             / result[label]["writer_alone_ms"])
        reader.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--single", type=int, default=10, help="1-row commits")
    parser.add_argument("--bulk", type=int, default=3, help="10,000-row commits")
    parser.add_argument("--dsn", help="an existing database (default: a throw-away server)")
    args = parser.parse_args(argv)
    if args.rows <= BULK:
        parser.error(f"--rows must be above {BULK:,} (the bulk commits change {BULK:,} rows of "
                     f"the view's table); got {args.rows:,}")
    load_before = os.getloadavg()
    if args.dsn:
        result = run(args.dsn, args.rows, args.single, args.bulk)
    else:
        with server() as dsn:
            result = run(dsn, args.rows, args.single, args.bulk)
    result["load_before"] = [round(x, 2) for x in load_before]
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"view of {result['rows']:,} rows; subscribing (triggers + snapshot) took "
          f"{result['subscribe_start_s']:.2f} s")
    for label in ("single", "bulk"):
        r = result[label]
        print(f"{r['size']:>6,}-row commit x{r['commits']}: delivered in {r['new_ms']:.2f} ms "
              f"from the delta vs {r['old_ms']:.1f} ms re-reading the view: "
              f"ratio old/new {r['ratio_old_new']:.1f}x; writer's commit "
              f"{r['writer_subscribed_ms']:.2f} ms subscribed vs {r['writer_alone_ms']:.2f} ms "
              f"not ({r['writer_ratio']:.2f}x)")
    print(f"load average before {result['load_before']}, after {result['load_after']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
