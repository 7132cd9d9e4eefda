"""CDC throughput: raw slot read rate vs Tidemark's end-to-end apply rate, in the same run.

Usage: python bench/cdc_throughput.py [--workload insert|update] [--rows N] [--table-rows M]
                                     [--letters L] [--deletes D] [--breakdown]

``insert`` (default): the source inserts N rows into an events table (transactions of 10,000).
``update``: a pgbench_accounts-shaped table of M rows (default 1,000,000: aid key, bid,
abalance, an 84-character filler) is snapshotted first (untimed), then the source makes N
random-key updates of abalance (transactions of 10,000), as pgbench does.

``--letters L`` (``update`` only): the table is under a contract (``bid`` at most 10, which every
row the bench writes meets) and has L waiting dead letters before the timed part: the source
sets ``bid = 99`` on L random keys (untimed, landed as letters). The timed updates then run
with the contract's validation and the applier's work for a table with waiting letters; a
lettered row the updates touch stays bad and is a letter again (about as many as the updates
touch of the L keys). Compare a tree with it against another with the same flag.
``--deletes D`` (``update`` only): each transaction also deletes D random keys, so every batch
removes rows (with ``--letters``: the batches that pay the match of removals to letters,
:mod:`ingestion.letter_removals`). Rows/s count updates and deletes.

Baseline: a second pgoutput slot over the same WAL, consumed with psycopg2 and nothing else (no
decoding, no apply). Tidemark: ``ingestion.catch_up`` decoding, staging, and applying changelog +
mirror into landing. ``--breakdown`` also prints where the landing time goes (seconds and calls
per statement kind, measured around each call on the landing connection; the landing work runs on a
second thread, overlapping the stream thread's decoding). Last line: JSON {"bench":
"cdc_throughput", "workload", "rows", "raw_rows_per_s", "applied_rows_per_s", "ratio"}.
"""

from __future__ import annotations

import argparse
import collections
import json
import select
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import psycopg2
import psycopg2.extras

from ingestion import catch_up

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

STEP = 10_000
EVENTS = ("create table events (id bigint primary key, account int not null, kind text not null,"
          " amount numeric(12, 2) not null, created_at timestamptz not null, note text)")
ACCOUNTS = ("create table accounts (aid int primary key, bid int not null, abalance int not null,"
            " filler char(84))")


def raw_read(src: str, slot: str, rows: int, kind: bytes) -> float:
    """Consume ``slot`` without decoding until ``rows`` row messages of ``kind`` were read;
    return seconds."""
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
        if msg.payload[:1] in kind:
            seen += 1
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


CONTRACT = ("version: 1\nfreshness: {warn_after: 15m, error_after: 1h}\ncompatibility: backward"
            "\nallowed_lateness: 1h\nprimary_key: [aid]\ncolumns:\n  aid: {type: integer}\n"
            "  bid: {type: integer, max: 10}\n  abalance: {type: integer}\n"
            "  filler: {type: text, nullable: true}\n")
"""``--letters``: the accounts' contract (the bench's rows meet it; ``bid = 99`` breaks it)."""


def accounts_contract(root: Path) -> object:
    """Write the accounts' contract under ``root`` and load it (``--letters``)."""
    from contracts import load_contracts

    (root / "bench").mkdir(parents=True, exist_ok=True)
    (root / "bench" / "accounts.yml").write_text(CONTRACT)
    return load_contracts(root)


def add_letters(src: str, land: str, letters: int, table_rows: int, contracts: object) -> int:
    """Break the contract on ``letters`` random keys and land them (untimed); return how many
    letters wait."""
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("update accounts set bid = 99 where aid in (select (random() * (%s - 1))::int"
                     " + 1 from generate_series(1, %s))", (table_rows, letters))
    catch_up(src, land, "bench", contracts=contracts, timeout_s=3600)
    with psycopg.connect(land) as conn:
        return conn.execute("select count(*) from tidemark.dead_letters where replayed_at is null"
                            ).fetchone()[0]


def prepare(src: str, land: str, workload: str, table_rows: int, contracts: object = None,
            letters: int = 0) -> None:
    """Create the table (and for ``update`` fill and snapshot it, then add ``letters`` dead
    letters under ``contracts``), then the baseline slot."""
    with psycopg.connect(src, autocommit=True) as conn:
        if workload == "insert":
            conn.execute(EVENTS)
        else:
            conn.execute(ACCOUNTS)
            conn.execute("insert into accounts select g, (g - 1) / 100000 + 1, 0, ''"
                         " from generate_series(1, %s) g", (table_rows,))
            conn.execute("vacuum analyze accounts")
        table = "events" if workload == "insert" else "accounts"
        conn.execute(f"create publication bench_raw for table {table}")
    catch_up(src, land, "bench", contracts=contracts, timeout_s=3600)  # slot, snapshot (untimed)
    if letters:
        waiting = add_letters(src, land, letters, table_rows, contracts)
        print(f"{waiting} dead letters wait on accounts", file=sys.stderr)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("select pg_create_logical_replication_slot('bench_raw', 'pgoutput')")


def write(src: str, workload: str, rows: int, table_rows: int, deletes: int = 0) -> int:
    """The source's changes, in transactions of about STEP rows (and ``deletes`` random-key
    deletes in each ``update`` transaction); return how many rows changed."""
    changed = 0
    with psycopg.connect(src, autocommit=True) as conn:
        for start in range(0, rows, STEP):
            n = min(STEP, rows - start)
            if workload == "insert":
                cur = conn.execute(
                    "insert into events select g, g %% 1000, case when g %% 3 = 0 then 'refund'"
                    " else 'charge' end, (g %% 10000) / 100.0, now(), 'note ' || g"
                    " from generate_series(%s::bigint, %s::bigint) g", (start + 1, start + n))
            else:
                # n distinct random keys, each updated once (pgbench's -N-like account update).
                cur = conn.execute(
                    "update accounts a set abalance = a.abalance + k.delta from (select distinct"
                    " on (aid) aid, delta from (select (random() * (%s - 1))::int + 1 as aid,"
                    " (random() * 10000)::int - 5000 as delta from generate_series(1, %s)) r)"
                    " k where a.aid = k.aid", (table_rows, n + n // 20))
            changed += cur.rowcount
            if deletes:
                changed += conn.execute(
                    "delete from accounts where aid in (select (random() * (%s - 1))::int + 1"
                    " from generate_series(1, %s))", (table_rows, deletes)).rowcount
    return changed


def measure_landing() -> collections.Counter:
    """Time every statement and COPY of the applier's landing connection, by kind."""
    from psycopg import sql

    import ingestion.applier as applier

    spent: collections.Counter = collections.Counter()
    calls = spent.calls = collections.Counter()
    execute, flush = psycopg.Cursor.execute, applier.Applier._flush_batch

    def timed_execute(self: psycopg.Cursor, query: object, params: object = None,
                      **kw: object) -> object:
        started = time.perf_counter()
        try:
            return execute(self, query, params, **kw)
        finally:
            text = query.as_string(self.connection) if isinstance(query, sql.Composable) \
                else str(query)
            kind = " ".join(text.split()[:3])[:48]
            spent[kind] += time.perf_counter() - started
            calls[kind] += 1

    def timed_flush(self: applier.Applier, batch: object) -> None:
        started = time.perf_counter()
        flush(self, batch)
        spent["(flush of a batch: COPY + statements)"] += time.perf_counter() - started
        calls["(flush of a batch: COPY + statements)"] += 1

    psycopg.Cursor.execute = timed_execute
    applier.Applier._flush_batch = timed_flush
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("insert", "update"), default="insert")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--table-rows", type=int, default=1_000_000)
    parser.add_argument("--letters", type=int, default=0,
                        help="update: a contract and this many waiting dead letters")
    parser.add_argument("--deletes", type=int, default=0,
                        help="update: also delete this many random keys per transaction")
    parser.add_argument("--breakdown", action="store_true",
                        help="print where the landing time goes")
    args = parser.parse_args()
    if args.letters and args.workload != "update":
        parser.error("--letters needs --workload update")
    if args.deletes and args.workload != "update":
        parser.error("--deletes needs --workload update")
    kind = b"I" if args.workload == "insert" else b"UD"
    with bench_server() as (src, land), tempfile.TemporaryDirectory() as tmp:
        contracts = accounts_contract(Path(tmp)) if args.letters else None
        prepare(src, land, args.workload, args.table_rows, contracts, args.letters)
        changes = write(src, args.workload, args.rows, args.table_rows, args.deletes)
        raw_s = raw_read(src, "bench_raw", changes, kind)
        spent = measure_landing() if args.breakdown else None
        started = time.perf_counter()
        stats = catch_up(src, land, "bench", contracts=contracts, timeout_s=3600)
        applied_s = time.perf_counter() - started
        assert stats.changes == changes, f"applied {stats.changes} of {changes} changes"
        if args.workload == "insert":
            with psycopg.connect(land) as conn:
                landed = conn.execute("select count(*) from bench.events").fetchone()[0]
            assert landed == changes, f"landed {landed} of {changes} rows"
    if spent is not None:
        print(f"landing time by statement over {applied_s:.2f}s of catch-up:")
        for what, seconds in spent.most_common(12):
            print(f"  {seconds:7.2f}s  {spent.calls[what]:6d}x  {what}")
    raw_rate = changes / raw_s
    applied_rate = stats.changes / applied_s
    print(f"raw slot read: {changes} {args.workload}s in {raw_s:.2f}s = {raw_rate:,.0f} rows/s")
    print(f"tidemark apply: {stats.changes} rows in {applied_s:.2f}s = {applied_rate:,.0f} rows/s "
          f"({stats.landing_commits} landing transactions)")
    print(json.dumps({"bench": "cdc_throughput", "workload": args.workload, "rows": changes,
                      "letters": args.letters, "deletes": args.deletes,
                      "raw_rows_per_s": round(raw_rate), "applied_rows_per_s": round(applied_rate),
                      "ratio": round(applied_rate / raw_rate, 3)}))


if __name__ == "__main__":
    main()
