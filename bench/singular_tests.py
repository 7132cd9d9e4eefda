"""Benchmark: the marts' singular dbt tests over all of history (no day window) and over one day.

A plain ``dbt test`` / ``dbt build`` (CI, a user by hand) runs a mart's singular test without
``min_date`` / ``TIDEMARK_DBT_MIN_DATE``: it reads every day. Round 36 saw
``assert_store_revenue_adds_up`` run over 10 minutes at 10x that way. This bench seeds the
mirror ``shop.<table>`` directly (``bench/batch.py``'s ``seeded_landing``: primary keys only),
builds every model once (not timed), then for each singular test compiles it (no window, and
one day in the middle of history), prints the plan (``EXPLAIN``, without running it) and runs
the compiled SQL on its own connection with ``statement_timeout`` = ``--timeout`` (a test that
does not finish in it is reported as "timed out", not waited for).

``--baseline DIR``: also compile each test from the dbt project of another checkout (e.g. a
worktree of main; same models, other tests) and run its SQL before this checkout's, alternated,
on the same data: an A/B in one run. The last line is JSON::

    {"bench": "singular_tests", "days": 70, "orders_per_day": 2000,
     "tests": {"assert_store_revenue_adds_up": {"all_days_s": ..., "one_day_s": ...,
               "baseline_all_days_s": ..., ...}, ...}}

    python bench/singular_tests.py [--days 70] [--orders-per-day 2000] [--timeout 600]
        [--select assert_store_revenue_adds_up] [--explain] [--baseline /work/wt/main-base]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, not an old install
sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import log, seeded_landing

from tests.dbt_project import dbt_runner
from tests.dbt_project.dbt_runner import DbtProject


@contextmanager
def project_dir(path: Path | None) -> Iterator[None]:
    """dbt invocations of the block use the dbt project at ``path`` (None: this checkout's)."""
    saved = dbt_runner.DBT_PROJECT
    dbt_runner.DBT_PROJECT = path or saved
    try:
        yield
    finally:
        dbt_runner.DBT_PROJECT = saved


def compiled(project: DbtProject, name: str, vars: dict[str, Any] | None) -> str:
    """The SQL dbt compiles test ``name`` to (with ``vars``)."""
    result = project.invoke("compile", "-s", name, vars=vars)
    [node] = [r.node for r in result.result.results]
    return node.compiled_code


def run_sql(url: str, query: str, timeout_s: float, explain: bool) -> tuple[float | None, int,
                                                                           str]:
    """(seconds or None when it timed out, rows, plan) of ``query`` under ``timeout_s``."""
    with psycopg.connect(url, autocommit=True) as conn:
        plan = "\n".join(r[0] for r in conn.execute(f"explain {query}")) if explain else ""
        conn.execute(f"set statement_timeout = '{int(timeout_s * 1000)}ms'")
        started = time.perf_counter()
        try:
            rows = len(conn.execute(query).fetchall())
        except psycopg.errors.QueryCanceled:
            return None, 0, plan
        return time.perf_counter() - started, rows, plan


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--orders-per-day", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a test's SQL may run before it is reported timed out")
    parser.add_argument("--select", default="test_type:singular",
                        help="dbt selection of the tests (default: every singular test)")
    parser.add_argument("--explain", action="store_true", help="print each plan")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout whose dbt project's tests run first (A/B)")
    args = parser.parse_args(argv)
    baseline_dir = args.baseline / "dbt_project" if args.baseline else None

    out: dict[str, dict[str, Any]] = {}
    with seeded_landing(args.days, args.orders_per_day) as seeded:
        project = DbtProject(seeded.landing_url, seeded.home / "dbt")
        sides: list[tuple[str, DbtProject, Path | None]] = [("", project, None)]
        if baseline_dir is not None:
            with project_dir(baseline_dir):
                sides.insert(0, ("baseline_", DbtProject(seeded.landing_url,
                                                         seeded.home / "dbt-baseline"),
                                 baseline_dir))
        log("dbt run --full-refresh (not timed) ...")
        project.invoke("run", "--full-refresh")
        listed = project.invoke("ls", "-s", args.select, "--resource-type", "test",
                                "--output", "name").result
        day = (seeded.end - timedelta(days=args.days // 2)).date().isoformat()
        for name in sorted(listed):
            for label, vars in (("all_days", None), ("one_day", {"min_date": day})):
                for side, dbt, path in sides:
                    with project_dir(path):
                        query = compiled(dbt, name, vars)
                    log(f"{side}{name} {label} ...")
                    seconds, rows, plan = run_sql(seeded.landing_url, query, args.timeout,
                                                  args.explain)
                    out.setdefault(name, {})[f"{side}{label}_s"] = (
                        None if seconds is None else round(seconds, 3))
                    shown = "timed out" if seconds is None else f"{seconds:.3f} s, {rows} rows"
                    log(f"  {shown}")
                    if plan:
                        print(f"-- plan of {side}{name} ({label}):\n{plan}")
        orders = seeded.stats.rows.get("orders", 0)

    print(f"history: {orders:,} orders over {args.days} days; timeout {args.timeout:.0f} s")
    for name, times in out.items():
        shown = {k: "timed out" if v is None else f"{v:.3f} s" for k, v in times.items()}
        for side, _, _ in sides:
            print(f"  {side + name:<54} all days {shown[side + 'all_days_s']:>10}   one day "
                  f"{shown[side + 'one_day_s']:>10}")
    print(json.dumps({"bench": "singular_tests", "days": args.days,
                      "orders_per_day": args.orders_per_day, "timeout_s": args.timeout,
                      "tests": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
