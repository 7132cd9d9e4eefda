"""What writing a batch's dead letters costs the applier: ``--letters`` bad rows in one source
transaction.

A source table ``t (id, v)`` whose contract allows ``v`` up to 0 only; each repetition inserts
``--letters`` rows with ``v = 1`` in one transaction and lands them with ``ingestion.catch_up``:
every row is a dead letter of one landing batch. Timed: the applier's ``_write_side_tables``
(where the letters are inserted; in a pipeline, its client side only), the same call with as
many letters outside a pipeline up to its commit ("direct"), and the whole catch-up; beside
them, in the same run, the catch-up of as many valid rows (the baseline: what landing rows
costs without letters). Also printed: the rows the waiting-count trigger added to
``tidemark.dead_letter_counts`` (one per statement). Runs against the tree on PYTHONPATH: A/B
main against a branch with the same command.

    flock /work/brief/bench.lock nice -n -10 env PATH=/work/venv/bin:$PATH PYTHONPATH=$PWD \\
        python bench/dead_letter_writes.py --letters 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from contracts import load_contracts
from ingestion import catch_up
from ingestion.applier import Applier
from tests.support import create_database, start_test_server

SOURCE = "dlw"
CONTRACT = """\
version: 1
primary_key: [id]
compatibility: backward
allowed_lateness: 1h
freshness: {warn_after: 1h, error_after: 1d}
columns:
  id: {type: integer}
  v: {type: integer, max: 0}
  note: {type: text, nullable: true}
"""


def _direct(land: str, letters: int, n: int) -> float:
    """The applier's letter write outside a pipeline, with its commit: ``letters`` letters
    shaped as ``ChangeBuffer._rejected`` makes them, timed from the call to the commit's end."""
    at = datetime.now(UTC)
    dead = [("direct", "t", "0/1000", f"{n + 1:X}/{i:X}", 2, "c", "v: 1 is above max 0",
             Jsonb([{"column": "v", "rule": "max", "message": "v: 1 is above max 0",
                     "value": "1"}]), "1", Jsonb({"id": str(i), "v": "1", "note": f"row {i}"}),
             at, 1000 + n) for i in range(1, letters + 1)]
    with psycopg.connect(land) as conn:
        applier = Applier(conn, "direct", "slot", "pub")
        start = time.perf_counter()
        applier._write_side_tables(dead, [])
        conn.commit()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    spent: list[float] = []
    original = Applier._write_side_tables

    def timed(self: Applier, dead: list[tuple], paused: list[tuple]) -> None:
        start = time.perf_counter()
        original(self, dead, paused)
        if dead:
            spent.append(time.perf_counter() - start)

    Applier._write_side_tables = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="dlw-") as tmp:
        server = start_test_server(Path(tmp) / "home")
        try:
            src = create_database(server, "dlw_src")
            land = create_database(server, "dlw_land")
            root = Path(tmp) / "contracts"
            (root / SOURCE).mkdir(parents=True)
            (root / SOURCE / "t.yml").write_text(CONTRACT)
            contracts = load_contracts(root)
            with psycopg.connect(src, autocommit=True) as conn:
                conn.execute("create table t (id int primary key, v int not null, note text)")
            catch_up(src, land, SOURCE, contracts=contracts)
            bad: list[float] = []
            good: list[float] = []
            writes: list[float] = []
            next_id = 1
            for _ in range(args.repeat):
                for v, out in ((1, bad), (0, good)):
                    with psycopg.connect(src, autocommit=True) as conn:
                        conn.execute("insert into t select g, %s::int, 'row ' || g from"
                                     " generate_series(%s::int, %s::int) g",
                                     (v, next_id, next_id + args.letters - 1))
                    next_id += args.letters
                    spent.clear()
                    start = time.perf_counter()
                    catch_up(src, land, SOURCE, contracts=contracts)
                    out.append(time.perf_counter() - start)
                    if v == 1:
                        writes.append(sum(spent))
            direct = [_direct(land, args.letters, n) for n in range(args.repeat)]
            with psycopg.connect(land) as conn:
                letters = conn.execute("select count(*) from tidemark.dead_letters"
                                       ).fetchone()[0] - args.letters * args.repeat
                count_rows = conn.execute("select count(*) from tidemark.dead_letter_counts"
                                          " where source = %s", (SOURCE,)).fetchone()[0]
        finally:
            server.stop()
    assert letters == args.letters * args.repeat, letters
    for label, values in (("write letters (s)", writes), ("direct write + commit (s)", direct),
                          ("catch-up, bad rows (s)", bad),
                          ("catch-up, valid rows (s)", good)):
        print(f"{label:28} " + " ".join(f"{v:.3f}" for v in values)
              + f"   median {statistics.median(values):.3f}")
    print(f"dead_letter_counts rows: {count_rows} for {letters} letters in {args.repeat} batches")
    print(json.dumps({
        "bench": "dead_letter_writes", "letters": args.letters, "repeat": args.repeat,
        "write_s": round(statistics.median(writes), 4),
        "write_us_per_letter": round(statistics.median(writes) / args.letters * 1e6, 2),
        "direct_s": round(statistics.median(direct), 4),
        "catch_up_bad_s": round(statistics.median(bad), 3),
        "catch_up_good_s": round(statistics.median(good), 3),
        "count_rows": count_rows}))


if __name__ == "__main__":
    main()
