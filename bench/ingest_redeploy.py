"""A live-view redeploy during ingestion's long transaction: how long the deploy waits, and
whether ingestion and readers stall.

A private embedded PostgreSQL (databases ``src``, ``land``); the source table ``events`` is
snapshotted by real ingestion (``ingestion.catch_up``, untimed) and ``live.bench_v`` (count,
sum per account over ``bench.events``) is deployed. The source then commits ONE transaction
of ``--rows`` inserts, followed by ``--after`` one-row transactions. ``catch_up`` applies them
(the big one as one landing transaction, exactly-once); once its landing transaction has been
open ``--start-after`` seconds, a thread redeploys ``bench_v`` changed (``max(amount)`` added),
while a reader selects ``live.bench_v`` every 0.1 s, and another ``tidemark.views`` (the
catalog, which ingestion's apply of other sources and ``tidemark status`` read).
``--deadline`` sets the deploy's limit (``DEADLINE_S``, default its own: 120 s);
``--no-deploy`` measures the same without one.

Printed: one JSON line {"bench": "ingest_redeploy", rows, ingest_s (catch_up of all),
landing_txn_s (the big landing transaction, as pg_stat_activity saw it), deploy_start_s and
deploy_s (from the ingestion transaction's start; the deploy's own duration), deploy (action or
error), deploy_after_commit_s (deploy end minus the big transaction's end), reader_max_ms,
reads, catalog_max_ms}.

Usage: python bench/ingest_redeploy.py [--rows 1000000] [--after 50] [--deadline S]
       [--start-after 2] [--no-deploy]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from pathlib import Path

import psycopg

from ingestion import catch_up
from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import parse_view_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

EVENTS = ("create table events (id bigint primary key, account int not null, kind text not null,"
          " amount numeric(12, 2) not null, created_at timestamptz not null, note text)")
V1 = ("select e.account, count(*) as n, sum(e.amount) as total from bench.events e"
      " group by e.account")
V2 = ("select e.account, count(*) as n, sum(e.amount) as total, max(e.amount) as top"
      " from bench.events e group by e.account")
INGESTING = ("select extract(epoch from now() - xact_start)::float8 from pg_stat_activity"
             " where application_name like 'tidemark ingest %%' and datname = current_database()"
             " and xact_start is not null order by xact_start limit 1")


def source_writes(src: str, rows: int, after: int) -> None:
    """One transaction of ``rows`` inserts, then ``after`` one-row transactions."""
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("insert into events select g, g %% 1000, 'charge', (g %% 10000) / 100.0,"
                     " now(), 'note ' || g from generate_series(1, %s) g", (rows,))
        for i in range(after):
            conn.execute("insert into events values (%s, 7, 'late', 1, now(), null)",
                         (rows + 1 + i,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--after", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=None)
    parser.add_argument("--start-after", type=float, default=2.0)
    parser.add_argument("--no-deploy", action="store_true")
    args = parser.parse_args()
    if args.deadline is not None:
        importlib.import_module("streaming_views.deploy").DEADLINE_S = args.deadline
    out: dict[str, object] = {"bench": "ingest_redeploy", "rows": args.rows}
    with bench_server() as (src, land):
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute(EVENTS)
        catch_up(src, land, "bench", timeout_s=600)
        deploy_embedded(land, [parse_view_text("bench_v", V1)])
        source_writes(src, args.rows, args.after)

        stop = threading.Event()
        marks: dict[str, float] = {}
        deploys: list[threading.Thread] = []
        reads: list[float] = []
        catalog: list[float] = []

        def ingest() -> None:
            catch_up(src, land, "bench", timeout_s=3600)
            marks["ingested"] = time.monotonic()

        def watch() -> None:
            """Note when the big landing transaction starts and ends, then redeploy."""
            with psycopg.connect(land, autocommit=True) as conn:
                while not stop.is_set():
                    row = conn.execute(INGESTING).fetchone()
                    now = time.monotonic()
                    if row and row[0] > 1.0 and "txn_start" not in marks:
                        marks["txn_start"] = now - row[0]
                    if "txn_start" in marks and "txn_end" not in marks and (
                            row is None or now - row[0] > marks["txn_start"] + 0.5):
                        marks["txn_end"] = now  # gone, or a later transaction
                    if "txn_start" in marks and not args.no_deploy and "deploy_start" not in \
                            marks and now - marks["txn_start"] >= args.start_after:
                        marks["deploy_start"] = now
                        deploys.append(threading.Thread(target=redeploy))
                        deploys[-1].start()
                    time.sleep(0.05)

        def redeploy() -> None:
            try:
                out["deploy"] = deploy_embedded(land, [parse_view_text("bench_v", V2)])[0].action
            except Exception as exc:  # reported in the JSON line
                out["deploy"] = f"error: {str(exc)[:300]}"
            marks["deploy_end"] = time.monotonic()

        def read(query: str, into: list[float]) -> None:
            with psycopg.connect(land, autocommit=True) as conn:
                while not stop.is_set():
                    t0 = time.monotonic()
                    conn.execute(query).fetchone()
                    into.append(time.monotonic() - t0)
                    time.sleep(0.1)

        threads = [threading.Thread(target=watch), threading.Thread(target=read, args=(
            "select count(*) from live.bench_v", reads)), threading.Thread(target=read, args=(
                "select count(*) from tidemark.views", catalog))]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        ingest()
        while not args.no_deploy and "deploy_end" not in marks and "deploy_start" in marks:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        # after the watch: it may have started the deploy after the loop above looked (round
        # 37: the server would then stop under the deploy, and deploy_end be missing)
        for t in deploys:
            t.join()
        with psycopg.connect(land) as conn:
            landed = conn.execute("select count(*) from bench.events").fetchone()[0]
        assert landed == args.rows + args.after, f"landed {landed}"
    start = marks.get("txn_start", t0)
    out |= {"ingest_s": round(marks["ingested"] - t0, 2),
            "landing_txn_s": round(marks.get("txn_end", marks["ingested"]) - start, 2)}
    if "deploy_start" in marks:
        out |= {"deploy_start_s": round(marks["deploy_start"] - start, 2),
                "deploy_s": round(marks["deploy_end"] - marks["deploy_start"], 2),
                "deploy_after_commit_s": round(marks["deploy_end"] - marks.get(
                    "txn_end", marks["ingested"]), 2)}
    out |= {"reader_max_ms": round(max(reads, default=0) * 1000, 1), "reads": len(reads),
            "catalog_max_ms": round(max(catalog, default=0) * 1000, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
