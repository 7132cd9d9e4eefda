"""min/max over a live view: the outer view's recompute with and without the inner-state index.

Workload (issue 13, views over views): ``bench.orders`` (N rows, default 1,000,000: 1,000
stores x N/1,000 days, one order per store and day), the inner live view ``daily`` (store, day,
count, sum: N rows) and the outer view ``by_day`` reading it: ``max(d.total)`` per day, grouped
by the inner view's *second* key (its unique index does not lead with it). Deleting a day's
largest order removes the outer group's maximum: the outer view recomputes that group from the
inner view's rows of that day.

On one throw-away embedded PostgreSQL: the median commit time of such a DELETE with the index
deploy creates on the inner view's state table (``tidemark_state.tidemark_live_<hash>``), then
with that index dropped (the code before it: a scan of the inner view per dirty group), and
the recompute's EXPLAIN (ANALYZE) with the index. Prints the ratio and the load average before
and after; last line: JSON.

Usage: python bench/layers_recompute.py [--rows N] [--deletes K]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivm_vs_refresh import server

from streaming_views.catalog import read_catalog
from streaming_views.compiler import compile_view
from streaming_views.deploy import deploy_embedded
from streaming_views.verify import diff_rows
from streaming_views.viewfile import parse_view_text

INNER = ("select o.store, o.day, count(*) as n, sum(o.amount) as total from bench.orders o "
         "group by o.store, o.day")
OUTER = "select d.day, max(d.total) as top, count(*) as stores from live.daily d group by d.day"


def deletes(conn: psycopg.Connection, days: list[int]) -> list[float]:
    """Delete each day's largest order (the outer group's max); return the commit times (s)."""
    out = []
    for day in days:
        row = conn.execute("select id from bench.orders where day = %s order by amount desc "
                           "limit 1", (day,)).fetchone()
        started = time.perf_counter()
        conn.execute("delete from bench.orders where id = %s", (row[0],))
        out.append(time.perf_counter() - started)
    return out


def recompute_plan(conn: psycopg.Connection, day: int) -> list[str]:
    """EXPLAIN (ANALYZE) of the outer view's recompute with group ``day`` marked dirty."""
    cv = compile_view(conn, parse_view_text("by_day", OUTER))
    with conn.transaction():
        conn.execute(f"update {cv.state} set __dirty = true where day = %s", (day,))
        plan = [r[0] for r in conn.execute(f"explain (analyze, costs off) "
                                           f"{cv.recompute_sql()}").fetchall()]
        conn.execute(f"update {cv.state} set __dirty = false")
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--deletes", type=int, default=15)
    parser.add_argument("--bin-dir", type=Path, default=None,
                        help="other PostgreSQL server binaries, e.g. /usr/lib/postgresql/15/bin")
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    with server(bin_dir=args.bin_dir) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        print(conn.execute("select version()").fetchone()[0])
        conn.execute("create schema bench; create table bench.orders (id int primary key, "
                     "store int not null, day int not null, amount int not null)")
        conn.execute("insert into bench.orders select g, g %% 1000, g / 1000, "
                     "(g::bigint * 7919) %% 100003 from generate_series(0, %s - 1) g", (args.rows,))
        conn.execute("vacuum analyze bench.orders")
        started = time.perf_counter()
        deploy_embedded(dsn, [parse_view_text("daily", INNER), parse_view_text("by_day", OUTER)])
        print(f"deployed both views over {args.rows:,} rows in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        index = read_catalog(conn, target="embedded", name="by_day")[0].base_indexes
        print(f"index on the inner view's state: {index}")
        days = args.rows // 1000
        plan = recompute_plan(conn, 7)
        print("EXPLAIN ANALYZE of the recompute of one dirty group, with the index:")
        print("\n".join(f"  {line}" for line in plan))
        with_index = deletes(conn, [(d * 37) % days for d in range(args.deletes)])
        assert diff_rows(conn, "by_day", OUTER) == ([], []), "by_day differs from its query"
        for name in index:
            conn.execute(f"drop index {name}")  # the code before: no index
        print("EXPLAIN ANALYZE of the same recompute without the index:")
        print("\n".join(f"  {line}" for line in recompute_plan(conn, 8)))
        without = deletes(conn, [(d * 41 + 3) % days for d in range(args.deletes)])
        assert diff_rows(conn, "by_day", OUTER) == ([], []), "by_day differs from its query"
    a, b = statistics.median(with_index) * 1000, statistics.median(without) * 1000
    load_after = os.getloadavg()
    print(f"DELETE of a day's max order (commit, median of {args.deletes}): with the index "
          f"{a:.2f} ms, without {b:.2f} ms: {b / a:.1f}x")
    print(f"load average after: {load_after}")
    print(json.dumps({"rows": args.rows, "with_index_ms": round(a, 3), "without_ms": round(b, 3),
                      "ratio": round(b / a, 2), "index_scan": any("Index" in p for p in plan),
                      "load_before": load_before, "load_after": load_after}))


if __name__ == "__main__":
    main()
