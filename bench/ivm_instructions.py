"""Instructions per single-row UPDATE (callgrind): no view, the live view, a hand-written ideal.

Why instructions: on the shared 2-core machine the timings of ``ivm_pgbench.py`` and
``ivm_vs_refresh.py`` move by tens of µs with the other processes' load, more than most changes
of the generated SQL are worth. The instructions one backend executes for the same statements
on the same data are the same from run to run (to a few hundred per UPDATE), whatever the
load: an A/B of two trees shows a change of 0.5 % of the maintenance's cost.

Workload: ``ivm_pgbench.py``'s (``ivm_vs_refresh.load``'s tables, ``--view``'s view, for
``--ideal`` its hand-written floor). Each case is a copy of the loaded database (``CREATE
DATABASE ... TEMPLATE``); the server is then stopped and each case runs ``--warmup`` and then
``--warmup + --updates`` single-row UPDATEs of fixed random orders (each its own transaction)
in a single-user backend (``postgres --single``) under ``valgrind --tool=callgrind``; the
difference of the two totals over ``--updates`` is the case's instructions per UPDATE (the
backend's start, its first plans and caches cancel out). Needs valgrind on PATH.

``--view sliding_5min``: ``ivm_sliding.py``'s five-minute window (orders every 2 ms, the clock at
the newest; the UPDATEs hit orders inside the window).

``--write payments`` / ``payments-insert`` (``--view left_join``): the single-row statement is an
UPDATE of a payment's amount / an INSERT of a payment (the NULL-extended side of the outer join)
instead of the UPDATE of an order's amount.

Usage: python bench/ivm_instructions.py [--view inner_join|left_join|sliding_5min] [--ideal]
       [--write orders|payments|payments-insert] [--rows N] [--updates K]. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivm_pgbench import IDEAL
from ivm_sliding import VIEW as SLIDING
from ivm_sliding import _place
from ivm_vs_refresh import VIEWS, load, server

from streaming_views.deploy import deploy_embedded
from streaming_views.expiry import tick
from streaming_views.viewfile import parse_view_text
from tidemark.stack.embedded import SYSTEM_USER, server_binary, server_env

SPACING_MS = 2.0  # --view sliding_5min: ivm_sliding.py's default (150,000 orders in the window)
BASE = datetime(2030, 1, 1, tzinfo=UTC)


def _pg_ctl(pgdata: str, *args: str) -> None:
    subprocess.run([str(server_binary("pg_ctl")), "-D", pgdata, "-w", *args], check=True,
                   capture_output=True, user=SYSTEM_USER, env=server_env())


WRITES = {  # --write: the single-row statement of each id
    "orders": "update bench.orders set amount = amount + 0.01 where order_id = {0};",
    "payments": "update bench.payments set amount = amount + 0.01 where payment_id = {0};",
    "payments-insert": "insert into bench.payments values (1000000 + {0}, {0}, 1.5) "
                       "on conflict do nothing;",
}


def instructions(pgdata: str, db: str, ids: list[int], out: Path, write: str = "orders") -> int:
    """The instructions a single-user backend of ``db`` executes for the single-row statements
    (:data:`WRITES`) of ``ids``."""
    return executed(pgdata, db, "".join(WRITES[write].format(i) + "\n" for i in ids), out)


def executed(pgdata: str, db: str, stmts: str, out: Path) -> int:
    """The instructions a single-user backend of ``db`` executes for ``stmts`` (one a line)."""
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          str(server_binary("postgres")), "--single", "-D", pgdata,
                          "-c", "autovacuum=off", db],
                         input=stmts.encode(), capture_output=True, user=SYSTEM_USER,
                         env={**server_env(), "PATH": "/usr/bin:/bin"}, check=False)
    found = re.search(rb"Collected : (\d+)", run.stderr)
    if found is None or b"ERROR:" in run.stdout + run.stderr:
        raise RuntimeError(f"callgrind run failed:\n{run.stdout[-2000:]!r}\n{run.stderr[-2000:]!r}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view", choices=[*sorted(VIEWS), "sliding_5min"], default="left_join")
    parser.add_argument("--ideal", action="store_true", help="also the hand-written floor")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--write", choices=sorted(WRITES), default="orders",
                        help="the single-row statement (payments: --view left_join only)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind outputs into this folder "
                        "(callgrind_annotate --inclusive=yes <case>.full)")
    args = parser.parse_args()
    if shutil.which("valgrind", path="/usr/bin:/bin") is None:
        sys.exit("bench/ivm_instructions.py counts instructions with valgrind, which is not in "
                 "/usr/bin: install it (Debian: apt-get install valgrind) and run it again.")
    if args.ideal and args.view != "left_join":
        parser.error("--ideal is written for --view left_join")
    if args.write != "orders" and (args.view != "left_join" or args.ideal):
        parser.error("--write payments* is for --view left_join (without --ideal)")
    cases = ["none", "live", *(["ideal"] if args.ideal else [])]
    rng = random.Random(5)
    sliding = args.view == "sliding_5min"
    low = args.rows - int(300_000 / SPACING_MS) + 1 if sliding else 1
    ids = [rng.randint(max(low, 1), args.rows) for _ in range(args.warmup + args.updates)]
    per_update: dict[str, float] = {}
    with server({"autovacuum": "off"}) as url, tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o777)  # callgrind's output, written by the server's user
        with psycopg.connect(url, autocommit=True) as conn:
            load(conn, args.rows, payments=args.view == "left_join")
            if sliding:
                _place(conn, BASE, SPACING_MS)
            pgdata = conn.execute("show data_directory").fetchone()[0]
            for case in cases:
                conn.execute(f"create database case_{case} template bench")
        case_url = url.replace("/bench?", "/case_{}?")
        if sliding:  # the clock at the newest order
            deploy_embedded(case_url.format("live"), [parse_view_text(
                "bench_clock", "select s.store_id from bench.stores s where s.store_id = 0")])
            tick(case_url.format("live"), BASE + timedelta(milliseconds=args.rows * SPACING_MS))
        view = SLIDING if sliding else VIEWS[args.view]
        deploy_embedded(case_url.format("live"),
                        [parse_view_text("bench_view", view, "bench_view.sql")])
        if args.ideal:
            with psycopg.connect(case_url.format("ideal"), autocommit=True) as conn:
                conn.execute(IDEAL)
        for case in cases:
            with psycopg.connect(case_url.format(case), autocommit=True) as conn:
                conn.execute("vacuum analyze")
        _pg_ctl(pgdata, "stop", "-m", "fast")
        try:
            for case in cases:
                short = instructions(pgdata, f"case_{case}", ids[:args.warmup],
                                     Path(tmp) / f"{case}.short", args.write)
                full = instructions(pgdata, f"case_{case}", ids, Path(tmp) / f"{case}.full",
                                    args.write)
                per_update[case] = (full - short) / args.updates
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                for out in Path(tmp).glob("*.*"):
                    shutil.copy(out, args.keep / out.name)
        finally:  # server() stops it
            _pg_ctl(pgdata, "start", "-l", str(Path(tmp) / "restart.log"))
    none = per_update["none"]
    for case in cases:
        over = per_update[case] - none
        print(f"{case:6s} instructions per UPDATE {per_update[case]:10.0f}  over none {over:9.0f}")
    print(json.dumps({"view": args.view, "write": args.write, "rows": args.rows,
                      "updates": args.updates,
                      "instructions": {c: round(v) for c, v in per_update.items()},
                      "over_none": {c: round(v - none) for c, v in per_update.items()}}))


if __name__ == "__main__":
    main()
