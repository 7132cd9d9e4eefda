"""The main job end to end: ``tidemark up`` in a subprocess, driven as a person and a script would.

After the first start at the default scale, Dagster's GraphQL API (what the UI shows) has every
asset materialised or observed, the daily partitions from the first day of data to yesterday all
materialised, and every check evaluated — by the build of ``tidemark up`` or, for dbt source
freshness, by the daemon right after — with no failure but the dead letters the demo writes on
purpose. Under the demo load: the Dagster webserver answers, an order committed in the source is
in the live view within a second, ``tidemark status`` reports every layer. Then Ctrl-C stops the
stack cleanly, the marker order changes while everything is down, and ``tidemark up`` again
resumes without duplicates. On the restarted (quiet) stack, a partition run launched through
Dagster's GraphQL API puts a late order for the last closed day (finality: yesterday once
~02:00 UTC passed, the day before until then) in the mart, and the
real reconciliation check passes for that day.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

import psycopg
import pytest

from orchestration.defs.dbt.project import dbt_project_dir
from streaming_views import load_views
from tests.e2e import dagster_api as api
from tests.e2e.stack import RunningStack, run_tidemark
from tidemark.settings import Settings
from tidemark.stack.embedded import EmbeddedServer
from tidemark.stack.supervisor import wait_for

pytestmark = pytest.mark.slow

MARKER_ID = 900_000_000_001  # far above the ids the demo workload hands out
LATE_ID = 900_000_000_002  # a late order for the last closed day (reconciliation compares those)
# A run launched here may queue behind the daemon's runs (two at a time; the corrections
# sensor launches a daily_marts run for the very day the late order below lands on) and then
# takes minutes on a loaded machine: in a fresh-clone CI of main (2026-12-05, load ~30) the
# partition run was created 03:27:59, queued until 03:30:28 and ended 03:38:05, after the
# 240 s this allowed. The wait is bounded and ends with the run.
RUN_TIMEOUT_S = 720.0
ORDER_COLUMNS = ("order_id, store_id, customer_id, status, placed_at, updated_at, total_amount,"
                 " delivery_notes")


def _insert_order(source_url: str, order_id: int, placed_at: datetime | None = None
                  ) -> tuple[int, date]:
    """Insert an order with two items for an existing store, customer and products, placed at
    ``placed_at`` (default: now).

    Returns:
        The order's store and its UTC order date.
    """
    with psycopg.connect(source_url) as conn:
        store_id, customer_id = conn.execute(
            "select (select min(store_id) from stores), (select min(customer_id) from customers)"
        ).fetchone()
        products = conn.execute(
            "select product_id, unit_price from products order by product_id limit 2").fetchall()
        total = sum(price * qty for (_, price), qty in zip(products, (1, 2), strict=True))
        day = conn.execute(
            "insert into orders (order_id, store_id, customer_id, status, placed_at, updated_at,"
            " total_amount) values (%s, %s, %s, 'placed', coalesce(%s, now()), now(), %s)"
            " returning (placed_at at time zone 'UTC')::date",
            (order_id, store_id, customer_id, placed_at, total)).fetchone()[0]
        for line, ((product_id, price), qty) in enumerate(zip(products, (1, 2), strict=True), 1):
            conn.execute("insert into order_items (order_id, line_number, product_id, quantity,"
                         " unit_price) values (%s, %s, %s, %s, %s)",
                         (order_id, line, product_id, qty, price))
    return store_id, day


def _live_includes(landing_url: str, order_id: int, store_id: int, day: date) -> bool:
    """In one snapshot: the mirror has the order and the live row counts it.

    The live row's ``order_count`` must equal the mirror's count of that store's orders of the
    day (the marker included), so the view reflects the marker, not just some later change.
    """
    with psycopg.connect(landing_url) as conn:
        conn.execute("set transaction isolation level repeatable read")
        landed, mirrored, live = conn.execute(
            "select exists (select 1 from shop.orders where order_id = %(id)s),"
            " (select count(*) from shop.orders where store_id = %(store)s"
            "    and (placed_at at time zone 'UTC')::date = %(day)s),"
            " (select order_count from live.daily_store_revenue where store_id = %(store)s"
            "    and order_date = %(day)s)",
            {"id": order_id, "store": store_id, "day": day}).fetchone()
    return bool(landed) and live == mirrored


def _status(stack: RunningStack) -> dict[str, Any]:
    result = run_tidemark(stack, "status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _assert_layers(summary: dict[str, Any]) -> None:
    for layer in ("ingestion", "live_views", "batch", "reconciliation", "dagster"):
        value = summary.get(layer)
        assert value is not None, f"tidemark status has no {layer} layer: {summary}"
        assert not (isinstance(value, dict) and "error" in value), f"{layer}: {value}"
    assert summary["ingestion"]["slot_active"] is True, summary["ingestion"]
    assert summary["ingestion"]["paused_tables"] in ([], None), summary["ingestion"]
    assert "daily_store_revenue" in {v["name"] for v in summary["live_views"]}
    assert "fct_daily_store_revenue" in {m["mart"] for m in summary["batch"]}


def _rows(url: str, relation: str) -> Counter:
    with psycopg.connect(url) as conn:
        return Counter(conn.execute(f"select {ORDER_COLUMNS} from {relation}").fetchall())


def _mart_count(landing_url: str, store_id: int, day: date) -> int:
    with psycopg.connect(landing_url) as conn:
        row = conn.execute("select order_count from marts.fct_daily_store_revenue"
                           " where store_id = %s and order_date = %s", (store_id, day)).fetchone()
    return 0 if row is None else row[0]


def _source_count(source_url: str, store_id: int, day: date) -> int:
    with psycopg.connect(source_url) as conn:
        return conn.execute("select count(*) from orders where store_id = %s"
                            " and (placed_at at time zone 'UTC')::date = %s",
                            (store_id, day)).fetchone()[0]


def _launch_partition(stack: RunningStack, day: date) -> dict[str, Any]:
    run_id = api.launch_job(stack.dagster_url, "daily_marts",
                            tags={"dagster/partition": day.isoformat()})
    run = api.wait_run(stack.dagster_url, run_id, RUN_TIMEOUT_S)
    assert run["status"] == "SUCCESS", (run, stack.log())
    assert api.tag(run, "dagster/partition") == day.isoformat()
    return run


CHECKS_TIMEOUT_S = 300.0
EXPECTED_FAILURES = {"dead_letters"}  # the demo writes malformed events on purpose (WARN)


def _first_day(source_url: str) -> date:
    with psycopg.connect(source_url) as conn:
        return conn.execute("select (min(placed_at) at time zone 'UTC')::date from orders"
                            ).fetchone()[0]


def test_first_start_shows_every_layer_built_and_every_check_evaluated(
        stack: RunningStack) -> None:
    log = stack.log()
    for said in ("Seeded 7 days of demo history: 14,000 orders", "Landing caught up",
                 f"Built {len(load_views())} live view(s)", "daily marts", "Dagster UI is up"):
        assert said in log, log
    assert "Traceback" not in log
    first, yesterday = _first_day(stack.source_url), datetime.now(UTC).date() - timedelta(days=1)
    nodes = api.asset_nodes(stack.dagster_url)
    assert {"shop/orders", "live/daily_store_revenue", "staging/stg_shop__orders",
            "marts/dim_stores", "marts/fct_daily_store_revenue",
            "serving/daily_store_revenue"} <= set(nodes)
    for key, node in nodes.items():
        if node["isObservable"]:
            assert node["assetObservations"], f"{key} was never observed"
        else:
            assert node["assetMaterializations"], f"{key} is 'Never materialized'"
    daily = {k: n for k, n in nodes.items() if n["partitionKeys"]}
    # the project's daily marts (models/marts/daily, tag:daily), however many a user added
    marts = dbt_project_dir() / "models" / "marts" / "daily"
    assert set(daily) == {f"marts/{p.stem}" for p in marts.glob("*.sql")}, sorted(daily)
    for key, node in daily.items():
        assert node["partitionKeys"][0] == first.isoformat(), (key, node["partitionKeys"][:3])
        assert node["partitionKeys"][-1] == yesterday.isoformat()
        stats = node["partitionStats"]
        days = (yesterday - first).days + 1
        assert stats["numPartitions"] == days, (key, stats)
        # the demo's late orders may have a correction run re-building a day right now
        assert stats["numMaterialized"] + stats["numMaterializing"] >= days, (key, stats)
        assert stats["numFailed"] == 0, key

    checks = [(key.split("/"), c["name"]) for key, node in nodes.items()
              for c in (node["assetChecksOrError"].get("checks") or [])]
    assert len(checks) > 150
    deadline = time.monotonic() + CHECKS_TIMEOUT_S
    latest: dict[tuple[str, str], dict[str, Any] | None] = {}
    while True:  # dbt source freshness is queued for the daemon at the banner
        latest = {("/".join(k), c): api.latest_evaluated_check(stack.dagster_url, k, c)
                  for k, c in checks}
        pending = [k for k, e in latest.items() if e is None or e["evaluation"] is None]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert not pending, f"never evaluated: {pending}"
    failed = {k: e for k, e in latest.items()
              if e["evaluation"] is not None and not e["evaluation"]["success"]}
    assert {c for _, c in failed if not c.startswith("reconcile_")} <= EXPECTED_FAILURES, failed
    for (key, check), execution in latest.items():
        evaluation = execution["evaluation"]
        if key.startswith("live/"):
            assert evaluation["success"], (key, check, execution)
        elif check.startswith("reconcile_") and not evaluation["success"]:
            # the demo's late orders may land on a reconciled day: a warning, correction pending
            assert evaluation["severity"] == "WARN", (key, check, execution)
            assert "correction pending" in evaluation["description"], (key, check, execution)


def test_dagster_webserver_answers(stack: RunningStack) -> None:
    with urllib.request.urlopen(f"{stack.dagster_url}/server_info", timeout=10) as response:
        assert response.status == 200
        assert "dagster_webserver_version" in json.loads(response.read())
    data = api.graphql(stack.dagster_url, "{ repositoriesOrError { ... on RepositoryConnection"
                                          " { nodes { name location { name } } } } }")
    locations = {n["location"]["name"] for n in data["repositoriesOrError"]["nodes"]}
    assert "orchestration.definitions" in locations


def test_new_order_reaches_the_live_view(stack: RunningStack) -> None:
    """A source commit shows in ``live.daily_store_revenue`` by itself. How soon is the
    machine's: well under a second on a quiet one (printed here; ``bench/cdc_latency.py``
    measures it), several on a CI machine running two shards on two cores, so the test waits
    (bounded) instead of asserting a wall-clock figure."""
    store_id, day = _insert_order(stack.source_url, MARKER_ID)
    committed = time.monotonic()
    assert day == datetime.now(UTC).date() or day == datetime.now(UTC).date() - timedelta(days=1)
    seen = None
    while time.monotonic() - committed < 60.0:
        if _live_includes(stack.landing_url, MARKER_ID, store_id, day):
            seen = time.monotonic()
            break
        time.sleep(0.01)
    assert seen is not None, f"order {MARKER_ID} not in live.daily_store_revenue after 60 s"
    print(f"source commit -> live.daily_store_revenue: {(seen - committed) * 1000:.0f} ms")


def test_status_reports_every_layer(stack: RunningStack) -> None:
    summary = _status(stack)
    _assert_layers(summary)
    assert summary["ingestion"]["lag_seconds"] is None or summary["ingestion"]["lag_seconds"] < 60


def test_ctrl_c_stops_cleanly_and_a_restart_resumes_without_duplicates(
        stack: RunningStack) -> None:
    with psycopg.connect(stack.source_url) as conn:
        assert conn.execute("select count(*) from orders where order_id = %s",
                            (MARKER_ID,)).fetchone()[0] == 1, "run the live-view test first"
    code, log = stack.stop()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "PostgreSQL stopped" in log
    assert not (stack.home / "pgdata" / "postmaster.pid").exists()

    # While everything is down, the source changes: the restart must pick it up exactly once.
    server = EmbeddedServer(Settings(home=stack.home, port=stack.pg_port, source_url=None,
                                     landing_url=None))
    server.start()
    try:
        with psycopg.connect(stack.source_url) as conn:
            conn.execute("update orders set status = 'paid', updated_at = now()"
                         " where order_id = %s", (MARKER_ID,))
    finally:
        server.stop()

    stack.start("--rate", "0")  # quiet from here on: source and landing can be compared
    assert "Seeding" not in stack.log(), "the restart reuses the data"
    # the views are deployed already: a restart leaves them alone and says so
    assert f"Built 0 live view(s) ({len(load_views())} unchanged)" in stack.log(), stack.log()

    def caught_up() -> bool:
        return _rows(stack.source_url, "orders") == _rows(stack.landing_url, "shop.orders")

    assert wait_for(caught_up, 60, interval_s=0.5), "landing mirror never matched the source"
    source, mirror = _rows(stack.source_url, "orders"), _rows(stack.landing_url, "shop.orders")
    assert not source - mirror and not mirror - source  # EXCEPT ALL, both ways
    with psycopg.connect(stack.landing_url) as conn:
        changes = conn.execute(
            "select _op, status, _commit_lsn, _seq from cdc.shop__orders where order_id = %s"
            " order by _commit_lsn, _seq", (MARKER_ID,)).fetchall()
        duplicated = conn.execute(
            "select count(*) from (select _commit_lsn, _seq from cdc.shop__orders"
            " group by 1, 2 having count(*) > 1) d").fetchone()[0]
    assert [(op, status) for op, status, *_ in changes] == [("c", "placed"), ("u", "paid")], \
        changes
    assert duplicated == 0, "a change landed twice in the changelog"
    verify = run_tidemark(stack, "views", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ok live.daily_store_revenue" in verify.stdout


def _last_closed_day(stack: RunningStack) -> date | None:
    """The last day of ``fct_daily_store_revenue`` closed by the watermarks (finality)."""
    row = next(f for f in _status(stack)["finality"] if f["mart"] == "fct_daily_store_revenue")
    return None if row["closed_through"] is None else date.fromisoformat(row["closed_through"])


def _landing_value(landing_url: str, query: str, params: tuple) -> Any:
    with psycopg.connect(landing_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


@pytest.mark.timeout(2400)  # the corrections sensor's 180 s, then two runs of RUN_TIMEOUT_S
def test_partition_run_builds_the_mart_and_reconciliation_passes(stack: RunningStack) -> None:
    with psycopg.connect(stack.source_url) as conn:
        row = conn.execute("select store_id, (placed_at at time zone 'UTC')::date from orders"
                           " where order_id = %s", (MARKER_ID,)).fetchone()
    assert row is not None, "run the live-view test first"
    store_id, today = row
    assert wait_for(lambda: _live_includes(stack.landing_url, MARKER_ID, store_id, today), 30)

    # Daily partitions are closed days (today stays provisional, in the live views): a late
    # order for the last closed day goes through the partition run and the reconciliation of
    # that day. Orders may arrive 2 h late, so the last closed day is yesterday only after
    # ~02:00 UTC: ask finality (`tidemark status`), never the clock.
    closed_day = _last_closed_day(stack)
    assert closed_day is not None and closed_day < today, "no closed day after the first start"
    placed = datetime.combine(closed_day, dtime(12), tzinfo=UTC)
    late_store, day = _insert_order(stack.source_url, LATE_ID, placed)
    assert day == closed_day
    assert wait_for(lambda: _live_includes(stack.landing_url, LATE_ID, late_store, day), 30)
    # The day was closed: the order is recorded as late and the corrections sensor (in the
    # daemon) asks for a re-run of that mart day.
    assert _landing_value(stack.landing_url, "select late_rows from tidemark.late_events"
                          " where table_name = 'orders' and day = %s", (day,))
    assert wait_for(lambda: _landing_value(
        stack.landing_url, "select coalesce(correction_requested_at, corrected_at) from"
        " tidemark.reconciled_days where pair = 'daily_store_revenue' and day = %s",
        (day,)) is not None, 180), "the corrections sensor did not react to late data"
    _launch_partition(stack, day)
    assert _mart_count(stack.landing_url, late_store, day) == _source_count(
        stack.source_url, late_store, day), "the mart's day holds every order, the late one"

    started = datetime.now(UTC)
    run_id = api.launch_job(stack.dagster_url, "reconciliation")
    run = api.wait_run(stack.dagster_url, run_id, RUN_TIMEOUT_S)
    assert run["status"] == "SUCCESS", (run, stack.log())
    executions = [e for e in api.check_executions(
        stack.dagster_url, ["marts", "fct_daily_store_revenue"], "reconcile_daily_store_revenue")
        if e["runId"] == run_id]
    assert executions, "the reconciliation run recorded no check execution"
    assert executions[0]["status"] == "SUCCEEDED", executions[0]
    assert executions[0]["evaluation"]["success"] is True, executions[0]
    with psycopg.connect(stack.landing_url) as conn:
        status, checked_at = conn.execute(
            "select status, checked_at from tidemark.reconciled_days where pair = %s"
            " and day = %s", ("daily_store_revenue", day)).fetchone()
    assert status == "reconciled"
    assert checked_at >= started - timedelta(seconds=5)
    # the late order is in the mart, reconciled: served as corrected
    assert _landing_value(stack.landing_url, "select string_agg(distinct status, ',') from"
                          " serving.daily_store_revenue where order_date = %s",
                          (day,)) == "corrected"

    summary = _status(stack)
    _assert_layers(summary)
    pair = next(p for p in summary["reconciliation"] if p["pair"] == "daily_store_revenue")
    assert pair["latest_reconciled_day"] >= day.isoformat()
    assert pair["drifting_days"] == []
    # The after-batch sensor may have started a newer reconciliation run meanwhile.
    assert summary["dagster"]["latest_runs"]["reconciliation"]["status"] != "FAILURE"
    assert summary["dagster"]["latest_runs"]["daily_marts"]["status"] != "FAILURE"
