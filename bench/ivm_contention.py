"""Live view maintenance under contention: 4 READ COMMITTED writers on N hot dimension rows.

Workload (issue 11): a join view ``fact JOIN dim`` grouped per region (count, sum, max). Each
writer transaction updates one random hot dimension row and inserts one fact row for another
random hot key, in random order (half the transactions dimension first, half fact first) — the
shape that deadlocked the engine before (27 deadlocks in 20 s at N = 5). Writers are separate
processes (no GIL between them). In one run, on one throw-away embedded PostgreSQL (fsync off):

* for N = 5 and N = 1,000 hot rows: ``--seconds`` with no view (the view's triggers disabled),
  then ``--seconds`` with the live view (rebuilt first) — commits/s, deadlocks (40P01),
  serialization failures and other errors per case, and live / no-view;
* the live view is verified equal to its query at the end.

Target: no deadlock, and live >= 50 % of no-view commits at N = 1,000. Last line: JSON.

``--touch region`` makes the dimension update change the view's group column (``region``)
instead of a column the view does not read (``hits``, the default): each such update moves the
row's facts between groups at commit.

Usage: python bench/ivm_contention.py [--seconds 20] [--writers 4] [--hot 5,1000]
       [--touch hits|region] [--dsn URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from ivm_vs_refresh import server

from streaming_views.deploy import deploy_embedded, rebuild
from streaming_views.verify import diff_rows
from streaming_views.viewfile import parse_view_text

VIEW = """select d.region, count(*) as n, sum(f.amount) as total, max(f.amount) as top
from bench.fact f join bench.dim d on d.k = f.k
group by d.region"""
DIMENSION_ROWS = 10_000
FACT_ROWS = 100_000


def load(conn: psycopg.Connection) -> None:
    """(Re)create ``bench.dim`` and ``bench.fact`` with seed rows."""
    conn.execute("drop schema if exists bench cascade")
    conn.execute("create schema bench")
    conn.execute("create table bench.dim (k int primary key, region text not null, "
                 "hits bigint not null default 0)")
    conn.execute("create table bench.fact (id bigserial primary key, k int not null, "
                 "amount numeric(12, 2) not null)")
    conn.execute("create index on bench.fact (k)")
    conn.execute("insert into bench.dim (k, region) select k, 'region-' || (k %% 20) "
                 "from generate_series(0, %s) k", (DIMENSION_ROWS - 1,))
    conn.execute("insert into bench.fact (k, amount) select (i * 7919) %% %s, (i %% 1000) / 10.0 "
                 "from generate_series(1, %s) i", (DIMENSION_ROWS, FACT_ROWS))
    conn.execute("vacuum analyze bench.dim")
    conn.execute("vacuum analyze bench.fact")


DIMENSION_UPDATES = {
    # a column the view does not read: the view's maintenance skips the row
    "hits": ("update bench.dim set hits = hits + 1 where k = %s", lambda rng, k: (k,)),
    # the view's join partner column: the dimension row's facts move to another group
    "region": ("update bench.dim set region = 'region-' || %s where k = %s",
               lambda rng, k: (rng.randrange(20), k)),
}


def writer(dsn: str, seed: int, hot: int, seconds: float, start: float, out: mp.Queue,
           touch: str = "hits") -> None:
    """One writer process: transactions until ``start + seconds``; puts its counts on ``out``.
    ``touch``: the dimension column each transaction updates (:data:`DIMENSION_UPDATES`)."""
    rng = random.Random(seed)
    counts = {"commits": 0, "deadlocks": 0, "serialization": 0, "errors": 0}
    with psycopg.connect(dsn) as conn:
        while time.time() < start:
            time.sleep(0.001)
        while time.time() < start + seconds:
            transaction(conn, rng, hot, touch, counts)
    out.put(counts)


def transaction(conn: psycopg.Connection, rng: random.Random, hot: int, touch: str,
                counts: dict[str, int]) -> None:
    """One writer transaction: the dimension update of ``touch`` and a fact INSERT on random
    hot keys, in random order; its outcome counted in ``counts`` (commits, deadlocks,
    serialization, errors)."""
    dim_update, dim_params = DIMENSION_UPDATES[touch]
    a, b = rng.randrange(hot), rng.randrange(hot)
    statements = [(dim_update, dim_params(rng, a)),
                  ("insert into bench.fact (k, amount) values (%s, %s)",
                   (b, rng.randrange(100_000) / 100))]
    if rng.random() < 0.5:
        statements.reverse()
    try:
        with conn.transaction():
            for text, params in statements:
                conn.execute(text, params, prepare=True)  # type: ignore[arg-type]
        counts["commits"] += 1
    except psycopg.errors.DeadlockDetected:
        counts["deadlocks"] += 1
    except psycopg.errors.SerializationFailure:
        counts["serialization"] += 1
    except psycopg.Error:
        counts["errors"] += 1


def contend(dsn: str, hot: int, seconds: float, writers: int,
            touch: str = "hits") -> dict[str, float]:
    """Run ``writers`` processes for ``seconds``; return summed counts and commits/s."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start = time.time() + 1.5  # every process connected before the clock starts
    procs = [ctx.Process(target=writer,
                         args=(dsn, 1000 * hot + w, hot, seconds, start, out, touch))
             for w in range(writers)]
    for p in procs:
        p.start()
    totals = {"commits": 0, "deadlocks": 0, "serialization": 0, "errors": 0}
    for _ in procs:
        for key, value in out.get(timeout=seconds + 120).items():
            totals[key] += value
    for p in procs:
        p.join()
    return {**totals, "commits_per_s": round(totals["commits"] / seconds, 1)}


def _triggers(conn: psycopg.Connection, on: bool) -> None:
    verb = "enable" if on else "disable"
    for table in ("bench.dim", "bench.fact"):
        conn.execute(f"alter table {table} {verb} trigger user")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--hot", default="5,1000", help="hot dimension rows per case")
    parser.add_argument("--touch", choices=sorted(DIMENSION_UPDATES), default="hits",
                        help="dimension column updated: hits (not read by the view) or region "
                        "(the view's group: the row's facts change groups)")
    parser.add_argument("--dsn", help="use this database (its schema 'bench' is replaced)")
    args = parser.parse_args(argv)
    result: dict[str, object] = {"bench": "ivm_contention", "writers": args.writers,
                                 "seconds": args.seconds, "touch": args.touch}
    with (server() if args.dsn is None else _given(args.dsn)) as dsn, \
            psycopg.connect(dsn, autocommit=True) as conn:
        load(conn)
        deploy_embedded(dsn, [parse_view_text("bench_hot_regions", VIEW)])
        for hot in (int(h) for h in args.hot.split(",")):
            _triggers(conn, False)
            plain = contend(dsn, hot, args.seconds, args.writers, args.touch)
            _triggers(conn, True)
            rebuild(dsn, "bench_hot_regions")  # writes made with the triggers off
            live = contend(dsn, hot, args.seconds, args.writers, args.touch)
            ratio = live["commits_per_s"] / plain["commits_per_s"] if plain["commits_per_s"] \
                else 0.0
            result[f"hot_{hot}"] = {"no_view": plain, "live": live,
                                    "live_over_no_view": round(ratio, 3)}
            print(f"N={hot}: no view {plain}; live {live}; live/no view {ratio:.2f}",
                  file=sys.stderr)
        extra, missing = diff_rows(conn, "bench_hot_regions", VIEW)
        result["verified"] = not extra and not missing
    print(json.dumps(result))
    return 0 if result["verified"] else 1


@contextmanager
def _given(dsn: str) -> Iterator[str]:
    yield dsn


if __name__ == "__main__":
    sys.exit(main())
