"""Partition semantics of the daily marts: idempotent days, ranges, the correction window."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import psycopg
import pytest
from psycopg import sql

from tests.dbt_project import independent
from tests.dbt_project.conftest import Landed
from tests.dbt_project.dbt_runner import describe_failure
from tests.dbt_project.marts import MARTS, assert_rows_equal, read_mart

DAILY = sorted(name for name, (_, _, day) in MARTS.items() if day)


def all_daily(landed: Landed) -> dict[str, dict]:
    return {mart: read_mart(landed.landing_url, mart) for mart in DAILY}


@pytest.fixture
def rebuilt(landed: Landed) -> Landed:
    """Every daily mart rebuilt from scratch (all days)."""
    landed.dbt.invoke("run", "-s", "+tag:daily", "--full-refresh")
    return landed


def test_rerunning_a_day_gives_the_same_rows(rebuilt: Landed) -> None:
    before = all_daily(rebuilt)
    day = rebuilt.days[2]
    for _ in range(2):
        rebuilt.dbt.invoke("run", "-s", "tag:daily", vars={"min_date": day, "max_date": day})
        assert all_daily(rebuilt) == before


def test_a_range_run_equals_day_by_day_runs(rebuilt: Landed) -> None:
    first, last = rebuilt.days[1], rebuilt.days[3]
    rebuilt.dbt.invoke("run", "-s", "tag:daily", "--full-refresh",
                       vars={"min_date": first, "max_date": last})
    as_range = all_daily(rebuilt)
    rebuilt.dbt.invoke("run", "-s", "tag:daily", "--full-refresh", vars={"min_date": first})
    day = first
    while day < last:
        day += timedelta(days=1)
        rebuilt.dbt.invoke("run", "-s", "tag:daily", vars={"min_date": day})
    assert all_daily(rebuilt) == as_range
    days_present = {key[0] for key in as_range["fct_daily_store_revenue"]}
    assert days_present == {first + timedelta(days=n) for n in range((last - first).days + 1)}
    assert_rows_equal(as_range["fct_daily_store_revenue"],
                      independent.store_revenue(rebuilt.source_url, rebuilt.source_schema,
                                                first, last), "range of store revenue")


def _late_changes(landed: Landed, day: date) -> None:
    """In the SOURCE: cancel an order of ``day``, refund another, add a late app event."""
    table = sql.Identifier
    s = landed.source_schema
    with psycopg.connect(landed.source_url) as conn:
        orders = [row[0] for row in conn.execute(sql.SQL(
            "select order_id from {} where (placed_at at time zone 'UTC')::date = %s "
            "and status <> 'cancelled' order by order_id limit 2").format(table(s, "orders")),
            (day,))]
        conn.execute(sql.SQL("update {} set status = 'cancelled', updated_at = now() "
                             "where order_id = %s").format(table(s, "orders")), (orders[0],))
        conn.execute(sql.SQL(
            "insert into {} (payment_id, order_id, payment_kind, method, amount, status, "
            "created_at, updated_at) select max(payment_id) + 1, %s, 'refund', 'wallet', 7.25, "
            "'settled', now(), now() from {}").format(table(s, "payments"),
                                                       table(s, "payments")), (orders[1],))
        at = datetime.combine(day, time(12), tzinfo=UTC)
        conn.execute(sql.SQL(
            "insert into {} (event_id, event_type, event_time, received_at, customer_id, "
            "session_id, payload) values (gen_random_uuid(), 'session_started', %s, now(), "
            "null, gen_random_uuid(), %s::jsonb)").format(table(s, "app_events")),
            (at, '{"platform": "ios", "app_version": "9.9.9"}'))
    landed.sync()


def test_a_late_change_is_absorbed_by_the_correction_window(rebuilt: Landed) -> None:
    today = datetime.now(UTC).date()
    inside, outside = today - timedelta(days=2), today - timedelta(days=5)
    assert inside in rebuilt.days and outside in rebuilt.days
    stale = all_daily(rebuilt)
    _late_changes(rebuilt, inside)
    _late_changes(rebuilt, outside)

    rebuilt.dbt.invoke("run", "-s", "+tag:daily")  # the nightly run: no vars, last 3 days + today

    src, schema = rebuilt.source_url, rebuilt.source_schema
    revenue = read_mart(rebuilt.landing_url, "fct_daily_store_revenue")
    assert_rows_equal({k: v for k, v in revenue.items() if k[0] == inside},
                      independent.store_revenue(src, schema, inside, inside), "inside window")
    assert_rows_equal(read_mart(rebuilt.landing_url, "fct_daily_funnel", inside, inside),
                      independent.funnel(src, schema, inside, inside), "late event")
    assert (sum(v["cancelled_order_count"] for k, v in revenue.items() if k[0] == inside)
            == sum(v["cancelled_order_count"] for k, v in stale["fct_daily_store_revenue"].items()
                   if k[0] == inside) + 1)
    # A day older than the window keeps its old numbers until it is backfilled explicitly.
    assert ({k: v for k, v in revenue.items() if k[0] == outside}
            == {k: v for k, v in stale["fct_daily_store_revenue"].items() if k[0] == outside})
    rebuilt.dbt.invoke("run", "-s", "tag:daily", vars={"min_date": outside})
    assert_rows_equal(read_mart(rebuilt.landing_url, "fct_daily_store_revenue", outside, outside),
                      independent.store_revenue(src, schema, outside, outside), "backfilled")


@pytest.mark.parametrize(("vars", "message"), [
    ({"min_date": "2026-03-05", "max_date": "2026-03-01"}, "is after max_date"),
    ({"max_date": "2026-03-01"}, "without min_date"),
    ({"min_date": "2026-02-30"}, "not a calendar date"),
    ({"min_date": "yesterday"}, "not an ISO date"),
    ({"reprocess_days": "-1"}, "reprocess_days"),
])
def test_a_bad_day_window_fails_with_a_clear_message(landed: Landed, vars: dict,
                                                     message: str) -> None:
    landed.dbt.invoke("run", "-s", "+fct_daily_funnel")
    result = landed.dbt.invoke("run", "-s", "fct_daily_funnel", vars=vars, check=False)
    assert not result.success
    assert message in describe_failure(result)


def test_a_partition_runs_window_makes_dbt_parse_nothing_again(tmp_path) -> None:
    # Dagster's partition runs give the window in TIDEMARK_DBT_MIN_DATE / _MAX_DATE; the macro
    # read them while dbt parsed, so each run re-parsed the marts and their tests (6 files,
    # ~1.5 s of CPU) before building. It reads them when it compiles the run's SQL instead.
    import os
    import subprocess

    from tests.dbt_project.dbt_runner import DBT_PROJECT
    from tidemark.stack.dbt import dbt_executable

    def parse(**window: str) -> str:
        env = {**os.environ, "DBT_TARGET_PATH": str(tmp_path / "target"),
               "DBT_LOG_PATH": str(tmp_path / "logs"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
               **window}
        done = subprocess.run([dbt_executable(), "parse", "--project-dir", str(DBT_PROJECT),
                               "--profiles-dir", str(DBT_PROJECT), "--log-format", "json",
                               "--log-level", "debug"],
                              env=env, capture_output=True, text=True, check=True)
        return done.stdout

    parse()
    again = parse(TIDEMARK_DBT_MIN_DATE="2026-01-01", TIDEMARK_DBT_MAX_DATE="2026-01-07")
    assert "PartialParsingFile" not in again, again
    assert "Partial parsing enabled: 0 files deleted, 0 files added, 0 files changed" in again
