"""Instructions per transaction of ``ivm_contention.py``'s writers (callgrind), no view vs live.

The contention figure is CPU-bound on the 2-core machine (idle ~1 % during a live phase), so
live / no view follows the CPU each commit costs. This counts, load-independently, what one
writer transaction costs the backend with no writer beside it, with
``ivm_instructions.py``'s method (single-user backend under callgrind; the difference of
``--warmup`` and ``--warmup + --transactions`` transactions): ``ivm_contention``'s tables and
view; the no-view case is a copy of the database with the view's triggers disabled.

``--mix``: ``tx`` (the bench's transaction: UPDATE of ``dim.hits``, a column the view does not
read, and INSERT of a fact row), ``hits`` (the UPDATE alone), ``ins`` (the INSERT alone),
``region`` (UPDATE of the view's group column, and the INSERT: ``--touch region``).

Usage: python bench/ivm_contention_cost.py [--mix tx,hits,ins,region] [--transactions 200].
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivm_contention import VIEW, load
from ivm_instructions import _pg_ctl, executed
from ivm_vs_refresh import server

from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import parse_view_text

MIXES = ("tx", "hits", "ins", "region")


def transactions(mix: str, count: int, seed: int = 7) -> list[str]:
    """``count`` writer transactions of ``mix`` on 1,000 hot rows, one statement a line."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        a, b = rng.randrange(1000), rng.randrange(1000)
        hits = f"update bench.dim set hits = hits + 1 where k = {a};"
        region = f"update bench.dim set region = 'region-' || {rng.randrange(20)} where k = {a};"
        fact = f"insert into bench.fact (k, amount) values ({b}, {rng.randrange(100_000) / 100});"
        body = {"tx": [hits, fact], "hits": [hits], "ins": [fact], "region": [region, fact]}[mix]
        out.append("begin;\n" + "\n".join(body) + "\ncommit;\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mix", default="tx,hits,ins,region")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--transactions", type=int, default=200)
    args = parser.parse_args()
    mixes = args.mix.split(",")
    if unknown := set(mixes) - set(MIXES):
        parser.error(f"unknown --mix {sorted(unknown)}: choose from {MIXES}")
    result: dict[str, dict[str, int]] = {}
    with server({"autovacuum": "off"}) as url, tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o777)  # callgrind's output, written by the server's user
        with psycopg.connect(url, autocommit=True) as conn:
            load(conn)
            pgdata = conn.execute("show data_directory").fetchone()[0]
            deploy_embedded(url, [parse_view_text("bench_hot_regions", VIEW)])
            conn.execute("create database case_live template bench")
            conn.execute("alter table bench.dim disable trigger user; "
                         "alter table bench.fact disable trigger user")
            conn.execute("create database case_none template bench")
        for case in ("none", "live"):
            with psycopg.connect(url.replace("/bench?", f"/case_{case}?"),
                                 autocommit=True) as conn:
                conn.execute("vacuum analyze")
        _pg_ctl(pgdata, "stop", "-m", "fast")
        try:
            for mix in mixes:
                txs = transactions(mix, args.warmup + args.transactions)
                per = {}
                for case in ("none", "live"):
                    short = executed(pgdata, f"case_{case}", "".join(txs[:args.warmup]),
                                     Path(tmp) / f"{mix}.{case}.short")
                    full = executed(pgdata, f"case_{case}", "".join(txs),
                                    Path(tmp) / f"{mix}.{case}.full")
                    per[case] = round((full - short) / args.transactions)
                result[mix] = {**per, "over_none": per["live"] - per["none"]}
                print(f"{mix:7s} none {per['none']:9d}  live {per['live']:9d}  over none "
                      f"{per['live'] - per['none']:9d}", flush=True)
        finally:  # server() stops it
            _pg_ctl(pgdata, "start", "-l", str(Path(tmp) / "restart.log"))
    print(json.dumps({"bench": "ivm_contention_cost", "transactions": args.transactions,
                      "instructions": result}))


if __name__ == "__main__":
    main()
