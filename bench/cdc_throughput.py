"""CDC throughput: raw slot read rate vs Tidemark's end-to-end apply rate, in the same run.

Usage: python bench/cdc_throughput.py [--rows N]   (default 1,000,000 inserted rows)

The source inserts N rows (transactions of 10,000 rows). Baseline: a second pgoutput slot over
the same WAL, consumed with psycopg2 and nothing else (no decoding, no apply). Tidemark:
``ingestion.catch_up`` decoding, staging, and applying changelog + mirror into landing.
Last line: JSON {"bench": "cdc_throughput", "rows", "raw_rows_per_s", "applied_rows_per_s",
"ratio"}.
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import time
from pathlib import Path

import psycopg
import psycopg2
import psycopg2.extras

from ingestion import catch_up

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

TABLE = ("create table events (id bigint primary key, account int not null, kind text not null,"
         " amount numeric(12, 2) not null, created_at timestamptz not null, note text)")


def raw_read(src: str, slot: str, rows: int) -> float:
    """Consume ``slot`` without decoding until ``rows`` insert messages were read; return s."""
    conn = psycopg2.connect(src, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    cur.start_replication(slot_name=slot, decode=False,
                          options={"proto_version": "1", "publication_names": "bench_raw"})
    seen = 0
    started = time.perf_counter()
    while seen < rows:
        msg = cur.read_message()
        if msg is None:
            select.select([conn], [], [], 1.0)
            continue
        if msg.payload[:1] == b"I":
            seen += 1
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with bench_server() as (src, land):
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute(TABLE)
            conn.execute("create publication bench_raw for table events")
            conn.execute("select pg_create_logical_replication_slot('bench_raw', 'pgoutput')")
        catch_up(src, land, "bench")  # slot, publication, (empty) snapshot
        with psycopg.connect(src, autocommit=True) as conn:
            step = 10_000
            for start in range(0, args.rows, step):
                conn.execute(
                    "insert into events select g, g %% 1000, case when g %% 3 = 0 then 'refund'"
                    " else 'charge' end, (g %% 10000) / 100.0, now(), 'note ' || g"
                    " from generate_series(%s::bigint, %s::bigint) g",
                    (start + 1, min(start + step, args.rows)))
        raw_s = raw_read(src, "bench_raw", args.rows)
        started = time.perf_counter()
        stats = catch_up(src, land, "bench", timeout_s=3600)
        applied_s = time.perf_counter() - started
        with psycopg.connect(land) as conn:
            landed = conn.execute("select count(*) from bench.events").fetchone()[0]
        assert landed == args.rows, f"landed {landed} of {args.rows} rows"
    raw_rate = args.rows / raw_s
    applied_rate = stats.changes / applied_s
    print(f"raw slot read: {args.rows} rows in {raw_s:.2f}s = {raw_rate:,.0f} rows/s")
    print(f"tidemark apply: {stats.changes} rows in {applied_s:.2f}s = {applied_rate:,.0f} rows/s "
          f"({stats.landing_commits} landing transactions)")
    print(json.dumps({"bench": "cdc_throughput", "rows": args.rows,
                      "raw_rows_per_s": round(raw_rate), "applied_rows_per_s": round(applied_rate),
                      "ratio": round(applied_rate / raw_rate, 3)}))


if __name__ == "__main__":
    main()
