"""The applier's generator, long run: random writes under contracts for --minutes.

Runs cases of :mod:`tests.ingestion.applier_differential` (one seed each: keyed, composite-key
and keyless tables under contracts some rows break, a numeric key whose equal values are
written with other scales, columns and a key widened (int→bigint, numeric(p,s)→wider,
varchar(n)→varchar(m)→text) while changes and dead letters are in flight, TOAST values,
NaN/±Infinity, sessions in other time zones and DateStyles, key changes, multi-row DML,
truncates, rows fixed or deleted later at the source, dead-letter replays and contract edits at
random points), checking the
"nothing lost" oracle (:mod:`tests.ingestion.applier_oracle`) after every catch-up and replay,
on a throw-away embedded PostgreSQL, until the time is up or a case fails. A failure prints the
seed, the broken rows and the last steps; rerun it with ``--seed-start <seed> --cases 1``.
Last line: JSON.

Usage: python bench/applier_differential.py [--minutes 10] [--seed-start 1000] [--cases N]
       [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.ingestion

from cdc_common import bench_cluster

from ingestion.names import slot_name
from tests.ingestion.applier_differential import Case, OracleFailure, Stats

CONF = {"wal_level": "logical", "max_replication_slots": "20", "max_wal_senders": "20"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed-start", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=0, help="stop after N cases (0: time)")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    total = Stats()
    failure = None
    started = time.monotonic()
    deadline = started + args.minutes * 60
    seed = args.seed_start
    with bench_cluster(CONF) as (_, _, server), tempfile.TemporaryDirectory() as tmp:
        admin = server.admin_url("postgres")
        while time.monotonic() < deadline and (not args.cases or total.cases < args.cases):
            source = f"s{seed}"
            src, land = _databases(admin, server, seed)
            try:
                total.merge(Case(src, land, source, Path(tmp) / source, seed,
                                 steps=args.steps).run())
            except OracleFailure as exc:
                failure = str(exc)
                print(f"FAILED: {exc}", file=sys.stderr)
                break
            finally:
                _drop(admin, src, source, seed)
            print(f"{total.cases} cases, {total.checks} checks, "
                  f"{time.monotonic() - started:.0f}s", file=sys.stderr)
            seed += 1
    print(json.dumps({"bench": "applier_differential",
                      "minutes": round((time.monotonic() - started) / 60, 1),
                      "seeds": f"{args.seed_start}..{seed}", "cases": total.cases,
                      "steps": total.steps, "oracle_checks": total.checks,
                      "dead_letters": total.letters, "refused_for_good": total.refused,
                      "replays": dict(total.replays), "step_kinds": dict(total.kinds),
                      "failure": failure}))
    return 1 if failure else 0


def _databases(admin: str, server: object, seed: int) -> tuple[str, str]:
    with psycopg.connect(admin, autocommit=True) as conn:
        for db in (f"src{seed}", f"land{seed}"):
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(db)))
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
    return server.admin_url(f"src{seed}"), server.admin_url(f"land{seed}")


def _drop(admin: str, src: str, source: str, seed: int) -> None:
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots"
                     " where slot_name = %s and not active", (slot_name(source),))
    with psycopg.connect(admin, autocommit=True) as conn:
        for db in (f"src{seed}", f"land{seed}"):
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(db)))


if __name__ == "__main__":
    sys.exit(main())
