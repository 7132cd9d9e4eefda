"""A one-day build of a daily mart (a partition, a late-data correction) reads only its day.

The compiled SQL of each daily mart for one day is EXPLAINed on the landed database with the
indexes ingestion built from the contracts' ``indexes:`` lists (on the event-time columns of
orders, payments, deliveries and app_events, and on payments.order_id; none created here), with
the daily marts' pre-hook applied and sequential scans, hash and merge joins priced out
(``enable_seqscan = off``...: the test's tables are small, so the planner would otherwise read
them whole whatever the SQL): every scan of a source table must be bounded by an index
condition. A day filter on a derived date (``(placed_at at time zone
'UTC')::date = ...``) cannot use an index, refunds aggregated for every order before the join
read every payment ever, and a mirror without the index is read whole: each scans the whole
table, so its cost grows with history.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.dbt_project.conftest import Landed
from tests.dbt_project.dbt_runner import DBT_PROJECT
from tests.dbt_project.marts import MARTS, read_mart

DAILY = sorted(name for name, (_, _, day) in MARTS.items() if day)
TABLES = {"orders", "payments", "deliveries", "app_events"}
SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


@pytest.fixture(scope="module")
def indexed(landed: Landed) -> Landed:
    """The landed data (with the indexes ingestion built) analyzed, every daily mart built."""
    with psycopg.connect(landed.landing_url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(sql.SQL("analyze {}").format(sql.Identifier("shop", table)))
    landed.dbt.invoke("run", "-s", "+tag:daily", "--full-refresh")
    return landed


DAY_TESTS = {"assert_funnel_counts_each_event_once": ("fct_daily_funnel", "event_date",
                                                     "event_count"),
             "assert_store_revenue_adds_up": ("fct_daily_store_revenue", "order_date",
                                              "order_count")}
"""The daily marts' singular tests that compare a built day with the staged rows: they run with
every partition run and correction, so they must read only the run's days too (mart, day
column, a measure the test checks)."""


def _compiled(landed: Landed, mart: str, day: Any) -> str:
    landed.dbt.invoke("compile", "-s", mart, vars={"min_date": day})
    path = next(landed.dbt.target_path.glob(f"compiled/**/{mart}.sql"))
    return path.read_text()


def _scans(plan: dict) -> Iterator[dict]:
    if plan.get("Node Type") in SCANS:
        yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


def _pre_hook() -> str:
    """The daily marts' pre-hook (dbt_project.yml): the planner settings of a day's build."""
    config = yaml.safe_load((DBT_PROJECT / "dbt_project.yml").read_text())
    return config["models"]["tidemark"]["marts"]["daily"]["+pre-hook"]


def _unbounded_scans(landing_url: str, query: str) -> list[str]:
    """The source tables the plan of ``query`` reads without an index condition."""
    with psycopg.connect(landing_url) as conn:
        conn.execute(_pre_hook())
        # small tables: priced out too, a whole-table read under a hash or merge join
        for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
            conn.execute(sql.SQL("set local {} = off").format(sql.Identifier(setting)))
        plan = conn.execute(sql.SQL("explain (format json, verbose) {}").format(
            sql.SQL(query))).fetchone()[0][0]["Plan"]
    found = []
    for node in _scans(plan):
        bound = node.get("Index Cond") or node.get("Recheck Cond")
        if node.get("Schema") == "shop" and node["Relation Name"] in TABLES and not bound:
            found.append(f'{node["Node Type"]} on {node["Relation Name"]}')
    return found


@pytest.mark.parametrize("mart", DAILY)
def test_a_one_day_build_reads_only_its_day(indexed: Landed, mart: str) -> None:
    day = indexed.days[2]
    query = _compiled(indexed, mart, day)
    assert _unbounded_scans(indexed.landing_url, query) == [], query


def test_a_one_day_build_gives_the_rows_of_a_full_build(indexed: Landed) -> None:
    full = {mart: read_mart(indexed.landing_url, mart) for mart in DAILY}
    for day in (indexed.days[0], indexed.days[2], indexed.days[-1]):
        indexed.dbt.invoke("run", "-s", "tag:daily", vars={"min_date": day})
    assert {mart: read_mart(indexed.landing_url, mart) for mart in DAILY} == full


@pytest.mark.parametrize("test", sorted(DAY_TESTS))
def test_the_day_tests_of_a_one_day_run_read_only_its_day(indexed: Landed, test: str) -> None:
    """main read the whole outbox (the day derived from event_time), every order and refund."""
    query = _compiled(indexed, test, indexed.days[2])
    assert _unbounded_scans(indexed.landing_url, query) == [], query


def test_the_day_tests_still_catch_a_wrong_day(indexed: Landed) -> None:
    day = indexed.days[2]
    tests = sorted(DAY_TESTS)
    # settled: every change landed before the run started (the fixture's rows are recent)
    vars = {"min_date": day, "settle_minutes": 0}
    indexed.dbt.invoke("run", "-s", "tag:daily", vars={"min_date": day})
    indexed.dbt.invoke("test", "-s", *tests, vars=vars)
    with psycopg.connect(indexed.landing_url, autocommit=True) as conn:
        for mart, column, measure in DAY_TESTS.values():
            conn.execute(sql.SQL("update {} set {} = {} + 1 where {} = %s").format(
                sql.Identifier("marts", mart), sql.Identifier(measure), sql.Identifier(measure),
                sql.Identifier(column)), (day,))
    try:
        result = indexed.dbt.invoke("test", "-s", *tests, vars=vars, check=False)
        assert sorted((r.node.name, r.status) for r in result.result.results) == [
            (name, "fail") for name in tests]
    finally:
        indexed.dbt.invoke("run", "-s", "tag:daily", vars={"min_date": day})


def test_the_store_revenue_test_over_all_history_reads_each_table_once(indexed: Landed
                                                                      ) -> None:
    """Without a day window (a plain `dbt test` / `dbt build`: CI, a user) the test reads all of
    history: each source table once, grouped per order (round 37, r37). main looked up every
    order's payments and refunds one order at a time — a scan of shop.payments per order ever,
    over 10 minutes at 10x on a mirror without the order_id index (bench/singular_tests.py).
    It still passes on a right build and fails on a wrong day."""
    test = "assert_store_revenue_adds_up"
    indexed.dbt.invoke("compile", "-s", test)
    query = next(indexed.dbt.target_path.glob(f"compiled/**/{test}.sql")).read_text()
    with psycopg.connect(indexed.landing_url) as conn:
        conn.execute("set local max_parallel_workers_per_gather = 0")  # loops: one process
        plan = conn.execute(sql.SQL("explain (analyze, format json) {}").format(
            sql.SQL(query))).fetchone()[0][0]["Plan"]
    loops = [(n["Relation Name"], n["Actual Loops"]) for n in _scans(plan)
             if n.get("Relation Name") in TABLES]
    assert {name for name, _ in loops} == {"orders", "payments"}, loops
    assert all(count == 1 for _, count in loops), loops  # main: payments once per order

    day, vars = indexed.days[2], {"settle_minutes": 0}
    indexed.dbt.invoke("test", "-s", test, vars=vars)
    with psycopg.connect(indexed.landing_url, autocommit=True) as conn:
        conn.execute("update marts.fct_daily_store_revenue set order_count = order_count + 1"
                     " where order_date = %s", (day,))
    try:
        result = indexed.dbt.invoke("test", "-s", test, vars=vars, check=False)
        [(status, failures)] = [(r.status, r.failures) for r in result.result.results]
        assert (status, failures) == ("fail", 1)  # the one wrong day
    finally:
        indexed.dbt.invoke("run", "-s", "tag:daily", vars={"min_date": day})
