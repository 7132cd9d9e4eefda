"""Benchmark: a full dbt build of the daily truth against a one-day incremental run.

Starts its own embedded PostgreSQL in a temporary directory, seeds the landing-shaped mirror
``shop.<table>`` DIRECTLY with the demo history seeder (``seed_history(..., schema="shop")``,
no ingestion: the dbt models read only the mirror), drops the mirror's secondary indexes (the
mirror ingestion creates has primary keys only) and creates the changelog tables
``cdc.shop__<table>`` empty (the dbt sources and their tests need them to exist). Then, with the
project parsed once (not timed):

- ``full_s``: ``dbt run --full-refresh`` — every model, every day (staging and intermediate
  views, dimensions, the four daily marts over all days);
- ``one_day_s``: ``dbt run -s tag:daily --vars '{min_date: D, max_date: D}'`` — what a Dagster
  daily partition or a one-day correction runs (median of ``--repeat`` runs).

``ratio = full_s / one_day_s``. The last line is JSON::

    {"bench": "batch", "days": 30, "full_s": ..., "one_day_s": ..., "ratio": ...}

    python bench/batch.py [--days 30] [--orders-per-day 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, not an old install
from tests.dbt_project.dbt_runner import DbtProject
from tests.support import TEST_CONF, free_port
from tidemark.demo.schema import DEMO_TABLES
from tidemark.demo.seed import seed_history
from tidemark.settings import Settings
from tidemark.stack.bootstrap import ensure_database, ensure_roles
from tidemark.stack.embedded import EmbeddedServer

CDC_COLUMNS = sql.SQL(
    "_op char(1) not null, _lsn pg_lsn not null, _commit_lsn pg_lsn not null, "
    "_commit_at timestamptz not null, _txid bigint, _ingested_at timestamptz not null")


def log(message: str) -> None:
    """Progress on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)


def create_empty_changelog(landing_url: str) -> None:
    """``cdc.shop__<table>``: the mirror's columns plus the change metadata, no rows."""
    with psycopg.connect(landing_url, autocommit=True) as conn:
        conn.execute("create schema if not exists cdc")
        for table in DEMO_TABLES:
            conn.execute(sql.SQL("create table {} (like {}, {})").format(
                sql.Identifier("cdc", f"shop__{table}"), sql.Identifier("shop", table),
                CDC_COLUMNS))


def drop_secondary_indexes(landing_url: str) -> list[str]:
    """Drop the mirror's non-key indexes: ingestion's mirror has only primary keys."""
    with psycopg.connect(landing_url, autocommit=True) as conn:
        names = [row[0] for row in conn.execute(
            "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'shop' and not i.indisprimary "
            "and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid)")]
        for name in names:
            conn.execute(sql.SQL("drop index {}").format(sql.Identifier("shop", name)))
    return names


class Seeded(NamedTuple):
    """A seeded landing database (:func:`seeded_landing`)."""

    landing_url: str
    stats: Any
    home: Path
    end: datetime


@contextmanager
def seeded_landing(days: int, orders_per_day: int) -> Iterator[Seeded]:
    """An embedded server in a temporary directory with ``shop.*`` seeded directly, empty
    changelogs and primary keys only (the module docstring); stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="tidemark-bench-batch-") as tmp:
        home = Path(tmp)
        server = EmbeddedServer(Settings(home=home / "home", port=free_port(), source_url=None,
                                         landing_url=None), extra_conf=TEST_CONF)
        server.start()
        try:
            ensure_roles(server.admin_url("postgres"))
            ensure_database(server.admin_url("postgres"), "bench_landing")
            landing_url = server.admin_url("bench_landing")
            end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            log(f"seeding {days} days x {orders_per_day} orders into shop.* ...")
            stats = seed_history(landing_url, days=days, orders_per_day=orders_per_day,
                                 seed=42, end=end, schema="shop",
                                 progress=lambda done, n: log(f"  seeded day {done}/{n}"))
            log(f"seeded in {stats.elapsed_s:.1f}s: {stats.rows}")
            create_empty_changelog(landing_url)
            log(f"dropped secondary indexes {drop_secondary_indexes(landing_url)}")
            yield Seeded(landing_url, stats, home, end)
        finally:
            server.stop()


def timed(project: DbtProject, *args: str, vars: dict | None = None) -> float:
    """Seconds one dbt invocation takes (it must succeed)."""
    started = time.perf_counter()
    project.invoke(*args, vars=vars)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--orders-per-day", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="one-day runs (median)")
    args = parser.parse_args(argv)

    with seeded_landing(args.days, args.orders_per_day) as seeded:
        stats, end = seeded.stats, seeded.end
        project = DbtProject(seeded.landing_url, seeded.home / "dbt")
        log("full build (dbt run --full-refresh) ...")
        full_s = timed(project, "run", "--full-refresh")
        day = (end - timedelta(days=args.days // 2)).date().isoformat()
        one_day = []
        for n in range(args.repeat):
            log(f"one-day incremental run {n + 1}/{args.repeat} ({day}) ...")
            one_day.append(timed(project, "run", "-s", "tag:daily",
                                 vars={"min_date": day, "max_date": day}))
        one_day_s = statistics.median(one_day)

    orders = stats.rows.get("orders", 0)
    print(f"orders: {orders:,} over {args.days} days ({orders // args.days:,}/day)")
    print(f"full build (all models, all days): {full_s:8.2f} s")
    print(f"one-day incremental run (tag:daily): {one_day_s:8.2f} s  "
          f"(runs: {', '.join(f'{s:.2f}' for s in one_day)})")
    print(json.dumps({"bench": "batch", "days": args.days, "full_s": round(full_s, 2),
                      "one_day_s": round(one_day_s, 2),
                      "ratio": round(full_s / one_day_s, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
