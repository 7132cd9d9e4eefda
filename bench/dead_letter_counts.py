"""What a dead-letter count costs as the queue grows, and what keeping it costs the writer.

Seeds ``--letters`` dead letters by SQL (``--waiting`` of them not replayed, spread over
``--tables`` tables), then times the reads status, the ``dead_letters`` check and its sensors
make every minute: ``ingestion.status.table_status`` (per table) and ``ingestion.status.status``
(the source's total), the median of ``--repeat`` calls each, and prints the plans (EXPLAIN
ANALYZE, BUFFERS) of the statements they run for the count. Then the writer's side: ``--inserts``
letters inserted one statement each, in transactions of ten, as the applier's ``executemany``
does — the trigger that keeps the count runs once per statement (branch) or not at all (main).
Runs against the tree on PYTHONPATH: A/B main against a branch with the same command.

    flock /work/brief/bench.lock nice -n -10 env PATH=/work/venv/bin:$PATH PYTHONPATH=$PWD \\
        python bench/dead_letter_counts.py --letters 3000000 --waiting 1000000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

from ingestion.state import ensure_state
from ingestion.status import status, table_status

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

SOURCE = "h"


def seed(land: str, letters: int, waiting: int, tables: int) -> None:
    """``letters`` dead letters of ``SOURCE``, the first ``waiting`` not replayed."""
    with psycopg.connect(land, autocommit=True) as conn:
        ensure_state(conn, SOURCE)
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row, first_seen_at, replayed_at, replay_result)"
            " select %s, 't' || (i %% %s), '1/0'::pg_lsn + i * 100, '1/0'::pg_lsn + i * 100, 1,"
            " 'c', 'region not allowed', jsonb_build_object('id', i, 'region', 'mars',"
            " 'note', repeat('x', 200)), now() - interval '30 days'"
            " + (i::float8 / %s) * interval '30 days',"
            " case when i > %s then now() end, case when i > %s then 'superseded' end"
            " from generate_series(1, %s) i",
            (SOURCE, tables, letters, waiting, waiting, letters))
        conn.execute("vacuum analyze tidemark.dead_letters")


def explain(conn: psycopg.Connection, query: str, params: tuple) -> str:
    rows = conn.execute("explain (analyze, buffers, costs off) " + query, params).fetchall()
    return "\n".join(r[0] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=3_000_000)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--tables", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--inserts", type=int, default=20_000)
    args = parser.parse_args()
    try:
        from ingestion.dead_letter_counts import WAITING
        tree = "branch"
    except ImportError:
        WAITING = None
        tree = "main"
    report: dict[str, object] = {"tree": tree, "letters": args.letters,
                                 "waiting": args.waiting}
    with bench_server() as (src, land):
        started = time.perf_counter()
        seed(land, args.letters, args.waiting, args.tables)
        report["seed_s"] = round(time.perf_counter() - started, 1)
        tables = [(f"t{i}", None) for i in range(args.tables)]
        for name, call in (
                ("table_status_s", lambda: table_status(src, land, SOURCE, tables, 3600)),
                ("status_s", lambda: status(src, land, SOURCE))):
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                out = call()  # the last: status
                times.append(time.perf_counter() - t)
            report[name] = round(statistics.median(times), 4)
        report["counted"] = out["dead_letters"]
        with psycopg.connect(land, autocommit=True) as conn:
            query = WAITING.as_string(conn) if WAITING is not None else (
                "select table_name, count(*) from tidemark.dead_letters where source = %s"
                " and replayed_at is null group by table_name")
            plan = explain(conn, query, (SOURCE,))
            conn.execute("truncate tidemark.dead_letters")
        with psycopg.connect(land) as conn:
            t = time.perf_counter()
            for start in range(0, args.inserts, 10):
                with conn.cursor() as cur:
                    cur.executemany(
                        "insert into tidemark.dead_letters (source, table_name, lsn,"
                        " commit_lsn, seq, op, reason, violations, contract_version,"
                        " raw_row) values (%s, 't0', '2/0', '2/0', %s, 'c', 'x', '[]', '1',"
                        " '{\"id\": 1}') on conflict (source, table_name, commit_lsn, seq)"
                        " do nothing", [(SOURCE, start + i) for i in range(10)])
                conn.commit()
            report["insert_us_per_letter"] = round(
                (time.perf_counter() - t) / args.inserts * 1e6, 1)
    print(f"--- the count status and the check read\n{plan}\n")
    print(json.dumps({"bench": "dead_letter_counts", **report}))  # last line: JSON


if __name__ == "__main__":
    main()
