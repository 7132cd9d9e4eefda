"""Benchmark: what leaving the ``full_history`` dbt tests out of a batch/partition build saves.

Starts its own embedded PostgreSQL and seeds the mirror ``shop.<table>`` directly with the demo
history seeder (``bench/batch.py``'s ``seeded_landing``: no ingestion, empty changelogs, primary
keys only), builds
every model once (``dbt run --full-refresh``, not timed), then alternates ``--repeat`` times:

- ``all``: the data tests of the ``dbt_unpartitioned`` step (``dbt test -s "tag:unpartitioned
  source:*" --indirect-selection buildable --exclude test_type:unit``), what every nightly
  batch, ``tidemark up`` build and backfill ran before;
- ``per_run``: the same with ``--exclude ... tag:full_history``, what such a build runs now (the
  ``full_history`` tests run in the daily ``full_history_tests`` job instead).

It prints each ``full_history`` test's SQL time (dbt's ``execution_time``, median over the
``all`` runs), their sum (the SQL a build saves), and both commands' wall time (medians; dbt's
start-up is in both). The last line is JSON::

    {"bench": "full_history_tests", "days": 70, "orders_per_day": 2000, "saved_sql_s": ...,
     "all_wall_s": ..., "per_run_wall_s": ..., "tests": {...}}

    python bench/full_history_tests.py [--days 70] [--orders-per-day 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, not an old install
sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import log, seeded_landing

from tests.dbt_project.dbt_runner import DbtProject

TAG = "full_history"
#: The tests of the ``dbt_unpartitioned`` step (its selection and ``buildable`` indirect
#: selection). The marts' tests run in the partition step with the day window; without it a mart's
#: singular test reads every day (assert_store_revenue_adds_up: over 10 min at 10x here).
STEP = ("test", "-s", "tag:unpartitioned source:*", "--indirect-selection", "buildable")
ALL = (*STEP, "--exclude", "test_type:unit")
PER_RUN = (*STEP, "--exclude", "test_type:unit", f"tag:{TAG}")


def run_tests(project: DbtProject, args: tuple[str, ...]) -> tuple[float, dict[str, Any]]:
    """(wall seconds, {test name: (SQL seconds, tags)}) of one ``dbt test`` invocation."""
    started = time.perf_counter()
    result = project.invoke(*args)
    wall = time.perf_counter() - started
    return wall, {r.node.name: (r.execution_time, list(r.node.tags)) for r in result.result.results}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--orders-per-day", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="alternations (medians)")
    args = parser.parse_args(argv)

    walls: dict[str, list[float]] = {"all": [], "per_run": []}
    sql_times: dict[str, list[float]] = {}
    per_run_tests: set[str] = set()
    with seeded_landing(args.days, args.orders_per_day) as seeded:
        stats = seeded.stats
        project = DbtProject(seeded.landing_url, seeded.home / "dbt")
        log("dbt run --full-refresh (not timed) ...")
        project.invoke("run", "--full-refresh")
        for n in range(args.repeat):
            for label, command in (("all", ALL), ("per_run", PER_RUN)):
                log(f"{label} {n + 1}/{args.repeat}: dbt {' '.join(command)} ...")
                wall, tests = run_tests(project, command)
                walls[label].append(wall)
                tagged = sum(t for t, tags in tests.values() if TAG in tags)
                log(f"  {wall:.1f} s wall, {len(tests)} tests, full_history {tagged:.2f} s")
                if label == "per_run":
                    per_run_tests = set(tests)
                    continue
                for name, (seconds, tags) in tests.items():
                    if TAG in tags:
                        sql_times.setdefault(name, []).append(seconds)

    leaked = sorted(per_run_tests & set(sql_times))
    if leaked:
        raise SystemExit(f"full_history tests still in the per-run build: {leaked}")
    medians = {name: round(statistics.median(s), 3) for name, s in sorted(sql_times.items())}
    saved = round(sum(medians.values()), 3)
    wall_all, wall_run = (round(statistics.median(walls[k]), 2) for k in ("all", "per_run"))
    orders = stats.rows.get("orders", 0)
    app_events = stats.rows.get("app_events", 0)
    print(f"history: {orders:,} orders, {app_events:,} app events over {args.days} days")
    for name, seconds in medians.items():
        print(f"  {name:<70} {seconds:7.3f} s")
    print(f"SQL of the full_history tests a build no longer runs: {saved:.3f} s")
    print(f"dbt test wall, all data tests:        {wall_all:7.2f} s  ({walls['all']})")
    print(f"dbt test wall, without full_history:  {wall_run:7.2f} s  ({walls['per_run']})")
    print(json.dumps({"bench": "full_history_tests", "days": args.days,
                      "orders_per_day": args.orders_per_day, "saved_sql_s": saved,
                      "all_wall_s": wall_all, "per_run_wall_s": wall_run, "tests": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
