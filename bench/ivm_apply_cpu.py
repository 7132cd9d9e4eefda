"""Backend CPU time of live view maintenance: ``ivm_vs_refresh``'s UPDATEs, measured in CPU.

On a shared machine the wall-clock figures of ``bench/ivm_vs_refresh.py`` measure the
scheduler as much as the engine (at load 10 on 2 cores a 0.2 ms UPDATE takes 0.2–1.2 ms). This
benchmark runs the same workload (same tables, views and statements, from
``ivm_vs_refresh``) and reads the CPU time the writing backend spent (``/proc/<pid>/schedstat``
in ns, else user + system in ticks from ``/proc/<pid>/stat``; it includes the commit-time
apply: the connection autocommits) over blocks
of statements, with the view's triggers off (no view) and on (live view) alternating, so both
cases share the table state. Run it once per code tree (e.g. ``PYTHONPATH=<main checkout>``) to
compare engines; ratios live / no view compare across runs even when the load differs.

Usage: python bench/ivm_apply_cpu.py [--view inner_join|left_join] [--rows N] [--rounds R]
       [--singles K] [--bulks B]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import ivm_vs_refresh as base  # the workload (this directory is on sys.path)
import psycopg

from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import parse_view_text

TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(conn: psycopg.Connection) -> float:
    """Seconds of CPU the connection's backend has used: from ``/proc/<pid>/schedstat`` (in
    nanoseconds), else user + system from ``/proc/<pid>/stat`` (in clock ticks, 10 ms: a block
    of 1,000 one-row UPDATEs then reads to the nearest 10 us)."""
    proc = Path(f"/proc/{conn.info.backend_pid}")
    if (proc / "schedstat").exists():
        return int((proc / "schedstat").read_text().split()[0]) / 1e9
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(conn: psycopg.Connection, rows: int, rounds: int, singles: int,
            bulks: int) -> dict[str, float]:
    """CPU per single-row UPDATE (µs) and per 10k-row UPDATE (ms), no view and live."""
    rng = random.Random(11)
    single: dict[bool, list[float]] = {False: [], True: []}
    bulk: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for on in (False, True):
            base._triggers(conn, on)
            for _ in range(20):
                base._single(conn, rng, rows)
            start = backend_cpu(conn)
            for _ in range(singles):
                base._single(conn, rng, rows)
            single[on].append((backend_cpu(conn) - start) / singles * 1e6)
            for _ in range(bulks):
                start = backend_cpu(conn)
                base._bulk(conn, rng, rows)
                bulk[on].append((backend_cpu(conn) - start) * 1e3)
    base._triggers(conn, True)
    return {"single_no_view_us": statistics.mean(single[False]),
            "single_live_us": statistics.mean(single[True]),
            "bulk_no_view_ms": statistics.mean(bulk[False]),
            "bulk_live_ms": statistics.mean(bulk[True])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--view", choices=sorted(base.VIEWS), default="inner_join")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per case")
    parser.add_argument("--singles", type=int, default=1000, help="single-row UPDATEs per block")
    parser.add_argument("--bulks", type=int, default=3, help="10k-row UPDATEs per block")
    args = parser.parse_args(argv)
    view = base.VIEWS[args.view]
    name = "bench_orders_by_store" if args.view == "inner_join" else f"bench_{args.view}"
    t0 = time.perf_counter()
    with base.server() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        base.load(conn, args.rows, payments=args.view == "left_join")
        deploy_embedded(dsn, [parse_view_text(name, view)])
        conn.execute("vacuum analyze bench.orders")
        m = measure(conn, args.rows, args.rounds, args.singles, args.bulks)
    result = {"bench": "ivm_apply_cpu", "view": args.view, "rows": args.rows,
              **{k: round(v, 1) for k, v in m.items()},
              "single_live_over_no_view": round(m["single_live_us"] / m["single_no_view_us"], 2),
              "single_overhead_us": round(m["single_live_us"] - m["single_no_view_us"], 1),
              "bulk_overhead_ms": round(m["bulk_live_ms"] - m["bulk_no_view_ms"], 1),
              "bulk_live_rows_per_cpu_s": round(base.BULK / m["bulk_live_ms"] * 1e3),
              "seconds": round(time.perf_counter() - t0, 1)}
    for key, value in result.items():
        print(f"{key:>26}: {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
