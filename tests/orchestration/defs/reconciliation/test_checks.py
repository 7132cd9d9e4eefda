"""Reconciliation: passes on agreeing data; after a mart row is altered it fails with the right
per-day metadata; the correction sensor asks for just that day and the correction run makes
the check pass again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta

import dagster as dg
import psycopg
import pytest

from tests.orchestration.defs.conftest import check_results


@pytest.fixture(scope="module")
def rec(built):
    """The reconciliation module, imported once the manifest is prepared."""
    from types import SimpleNamespace

    from orchestration.defs.keys import check_name, mart_key
    from orchestration.defs.reconciliation.sensors import (
        reconcile_after_batch,
        reconciliation_corrections,
    )
    from tidemark.reconciliation.pairs import load_pairs

    return SimpleNamespace(check_name=check_name, mart_key=mart_key, load_pairs=load_pairs,
                           reconcile_after_batch=reconcile_after_batch,
                           reconciliation_corrections=reconciliation_corrections)


def _key(rec, pair_name: str) -> dg.AssetCheckKey:
    pair = next(p for p in rec.load_pairs() if p.name == pair_name)
    return dg.AssetCheckKey(rec.mart_key(pair.mart), rec.check_name(pair.name))


def test_reconciliation_drift_and_correction(built, rec) -> None:
    keys = [_key(rec, p.name) for p in rec.load_pairs()]
    passed = check_results(built.run_checks(keys))
    # one check per pair: the shipped three and any a user added (README "Extending")
    assert len(passed) == len(keys) >= 3 and all(e.passed for e in passed.values()), \
        [e.description for e in passed.values()]
    revenue = passed[("marts/fct_daily_store_revenue", "reconcile_daily_store_revenue")]
    days = [r.data["day"] for r in revenue.metadata["days"].value.records]
    assert days == [d.isoformat() for d in built.built_days]
    assert revenue.metadata["drifted_days"].value == []

    day = built.built_days[-2]
    store = built.sql("select min(store_id) from marts.fct_daily_store_revenue where "
                      "order_date = %s", (day,))[0][0]
    built.sql("update marts.fct_daily_store_revenue set gross_revenue = gross_revenue + 5, "
              "net_revenue = net_revenue + 5 where order_date = %s and store_id = %s",
              (day, store))
    key = _key(rec, "daily_store_revenue")
    failed = check_results(built.run_checks([key]))[
        ("marts/fct_daily_store_revenue", "reconcile_daily_store_revenue")]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["drifted_days"].value == [day.isoformat()]
    assert day.isoformat() in failed.description
    drift = [r.data for r in failed.metadata["drift"].value.records]
    assert sorted(r["measure"] for r in drift) == ["gross_revenue", "net_revenue"]
    for row in drift:
        assert row["order_date"] == day.isoformat() and row["store_id"] == str(store)
        assert row["live"] - row["truth"] == pytest.approx(-5.0)
        assert row["difference"] == pytest.approx(-5.0)
    per_day = {r.data["day"]: r.data for r in failed.metadata["days"].value.records}
    assert per_day[day.isoformat()]["drifted_groups"] == 1
    assert per_day[day.isoformat()]["gross_revenue_difference"] == pytest.approx(-5.0)
    assert all(r["drifted_groups"] == 0 for d, r in per_day.items() if d != day.isoformat())
    assert built.sql("select status from tidemark.reconciled_days where pair = %s and day = %s",
                     ("daily_store_revenue", day)) == [("drift",)]

    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    result = rec.reconciliation_corrections(context)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.job_name == "daily_marts"
    assert request.asset_selection == [dg.AssetKey(["marts", "fct_daily_store_revenue"])]
    assert request.partition_key_range == dg.PartitionKeyRange(day.isoformat(), day.isoformat())
    # the tag the run queue limits to one slot (dagster.yaml tag_concurrency_limits)
    assert request.tags["tidemark/correction"] == "fct_daily_store_revenue"
    assert isinstance(rec.reconciliation_corrections(context), dg.SkipReason)  # asked once


    runs_before = len(built.instance.get_runs())
    correction = built.job("daily_marts").execute_in_process(
        instance=built.instance, tags=request.tags, asset_selection=request.asset_selection)
    assert correction.success and len(built.instance.get_runs()) == runs_before + 1
    assert [e.partition for e in correction.get_asset_materialization_events()] \
        == [day.isoformat()]
    fixed = check_results(built.run_checks([key]))[
        ("marts/fct_daily_store_revenue", "reconcile_daily_store_revenue")]
    assert fixed.passed
    assert built.sql("select status, correction_requested_at from tidemark.reconciled_days "
                     "where pair = %s and day = %s", ("daily_store_revenue", day)) \
        == [("reconciled", None)]


def test_a_closed_day_no_run_built_is_set_aside_not_drift(built, rec) -> None:
    """A day closes at 02:00 UTC (orders may land 2 h late) and closed_days_sensor builds it
    then; a reconciliation in between (after a correction or a backfill of another day) found
    it in the live view only and said drift (ERROR, a correction asked) for a day nothing had
    built. A Dagster instance that never built the day's partition stands for that moment: the
    day is set aside and said. In the stack's own instance, which built it, a day the mart lost
    is still drift."""
    day = built.built_days[-1]
    key = _key(rec, "daily_store_revenue")
    name = ("marts/fct_daily_store_revenue", "reconcile_daily_store_revenue")
    built.sql("create table public.saved_revenue_day as select * from "
              "marts.fct_daily_store_revenue where order_date = %s", (day,))
    try:
        built.sql("delete from marts.fct_daily_store_revenue where order_date = %s", (day,))
        with dg.instance_for_test() as fresh:
            waiting = check_results(built.run_checks([key], instance=fresh))[name]
        assert waiting.passed, waiting.description
        assert waiting.metadata["unbuilt_days"].value == [day.isoformat()]
        assert waiting.metadata["drifted_days"].value == []
        assert day.isoformat() not in [r.data["day"]
                                       for r in waiting.metadata["days"].value.records]
        assert f"Not compared: {day.isoformat()} closed but marts.fct_daily_store_revenue has " \
               "not built them yet" in waiting.description
        assert built.sql("select status from tidemark.reconciled_days where pair = %s and "
                         "day = %s", ("daily_store_revenue", day)) == [("reconciled",)]
        lost = check_results(built.run_checks([key]))[name]
        assert not lost.passed and lost.metadata["drifted_days"].value == [day.isoformat()]
        assert "unbuilt_days" not in lost.metadata
    finally:
        built.sql("insert into marts.fct_daily_store_revenue select * from "
                  "public.saved_revenue_day")
        built.sql("drop table public.saved_revenue_day")
    assert check_results(built.run_checks([key]))[name].passed
    assert built.sql("select status, correction_requested_at from tidemark.reconciled_days "
                     "where pair = %s and day = %s", ("daily_store_revenue", day)) \
        == [("reconciled", None)]


def test_a_day_built_before_it_closed_is_set_aside_not_drift(built, rec) -> None:
    """`tidemark up` and the nightly schedule build yesterday closed or not; rows landed after
    that build and before the day closed are not late. Seen live (clock50, a shifted clock):
    `tidemark up` started at 01:49 UTC built 12-06; the reconciliation run at the closing
    (deliveries 01:55, orders 02:00) said 12-06 drifted, "late rows landed after their
    reconciliation" on a day never reconciled, before closed_days_sensor's run rebuilt it (an
    ERROR without late rows). An instance whose last build of the day predates its closing
    stands for that moment: the day is set aside and said. A day reconciled since it closed,
    or built after it closed (the stack's own instance), is still drift."""
    day = built.built_days[-1]
    key = _key(rec, "daily_store_revenue")
    name = ("marts/fct_daily_store_revenue", "reconcile_daily_store_revenue")
    pair_day = ("daily_store_revenue", day)
    [build] = built.instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=rec.mart_key("fct_daily_store_revenue"), asset_partitions=[day.isoformat()]),
        limit=1).records
    before_closing = datetime.combine(day, time(23, 0), UTC).timestamp()
    store = built.sql("select min(store_id) from marts.fct_daily_store_revenue where "
                      "order_date = %s", (day,))[0][0]
    built.sql("create table public.saved_reconciled_day as select * from "
              "tidemark.reconciled_days where pair = %s and day = %s", pair_day)
    try:
        # the orders that landed between the early build and the closing
        built.sql("update marts.fct_daily_store_revenue set gross_revenue = gross_revenue - 7, "
                  "net_revenue = net_revenue - 7 where order_date = %s and store_id = %s",
                  (day, store))
        built.sql("delete from tidemark.reconciled_days where pair = %s and day = %s", pair_day)
        with dg.instance_for_test() as early:
            early.store_event(build.event_log_entry._replace(timestamp=before_closing))
            waiting = check_results(built.run_checks([key], instance=early))[name]
            assert waiting.passed, waiting.description
            assert waiting.metadata["built_open_days"].value == [day.isoformat()]
            assert waiting.metadata["drifted_days"].value == []
            assert (f"Not compared: {day.isoformat()} closed after "
                    "marts.fct_daily_store_revenue last built them") in waiting.description
            assert built.sql("select count(*) from tidemark.reconciled_days where pair = %s "
                             "and day = %s", pair_day) == [(0,)]
            built.sql("insert into tidemark.reconciled_days select * from "
                      "public.saved_reconciled_day")
            since = check_results(built.run_checks([key], instance=early))[name]
        assert not since.passed and since.severity == dg.AssetCheckSeverity.ERROR
        assert since.metadata["drifted_days"].value == [day.isoformat()]
        assert "built_open_days" not in since.metadata
        after = check_results(built.run_checks([key]))[name]
        assert not after.passed and after.metadata["drifted_days"].value == [day.isoformat()]
        assert "built_open_days" not in after.metadata
    finally:
        built.sql("update marts.fct_daily_store_revenue set gross_revenue = gross_revenue + 7, "
                  "net_revenue = net_revenue + 7 where order_date = %s and store_id = %s",
                  (day, store))
        built.sql("drop table public.saved_reconciled_day")
    assert check_results(built.run_checks([key]))[name].passed
    assert built.sql("select status, correction_requested_at from tidemark.reconciled_days "
                     "where pair = %s and day = %s", pair_day) == [("reconciled", None)]


def _run_status_context(built, run):
    return dg.build_run_status_sensor_context(
        sensor_name="reconcile_after_batch", dagster_instance=built.instance, dagster_run=run,
        dagster_event=dg.DagsterEvent(event_type_value="PIPELINE_SUCCESS", job_name=run.job_name))


def test_reconcile_after_batch_requests_the_reconciliation_job(built, rec) -> None:
    from orchestration.defs.dbt.partitions import range_tags

    day = built.built_days[-1].isoformat()
    mart = dg.AssetKey(["marts", "fct_daily_store_revenue"])
    with_checks = built.job("daily_marts").execute_in_process(
        instance=built.instance, tags=range_tags(day, day))
    skipped = rec.reconcile_after_batch(_run_status_context(built, with_checks.dagster_run))
    assert isinstance(skipped, dg.SkipReason)  # reconciled in the same run already
    job = built.defs.get_implicit_global_asset_job_def().get_subset(
        asset_selection={mart}, asset_check_selection=set())
    without = job.execute_in_process(instance=built.instance, tags=range_tags(day, day))
    assert not [e for e in without.get_asset_check_evaluations()
                if e.check_name.startswith("reconcile_")]
    request = rec.reconcile_after_batch(_run_status_context(built, without.dagster_run))
    assert request.run_key == f"after-{without.dagster_run.run_id}"
    # a reconciliation run still queued reconciles this run's mart too: not asked twice
    with _queued_run(built, "reconciliation", {}):
        skipped = rec.reconcile_after_batch(_run_status_context(built, without.dagster_run))
    assert isinstance(skipped, dg.SkipReason) and "queued already" in skipped.skip_message


def test_late_data_for_a_day_a_queued_correction_covers_is_left_to_it(built, rec) -> None:
    """Late rows keep landing for a reconciled day while its correction waits in the run queue
    (a busy machine, a demo writing late data every minute): they are recorded and left to that
    run, which reads landing when it starts — not queued again behind it without bound."""
    from orchestration.defs.dbt.partitions import range_tags

    day = built.built_days[-4]
    mart = dg.AssetKey(["marts", "fct_daily_store_revenue"])
    _late_order(built, datetime.combine(day, time(19), tzinfo=UTC), store=2, amount=5.00)
    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    tags = {**range_tags(day.isoformat(), day.isoformat()),
            "tidemark/correction": "fct_daily_store_revenue"}
    with _queued_run(built, "daily_marts", tags):
        coalesced = rec.reconciliation_corrections(context)
        again = rec.reconciliation_corrections(context)
    assert isinstance(coalesced, dg.SensorResult)
    assert not [r for r in coalesced.run_requests if r.asset_selection == [mart]]
    assert [e for e in coalesced.asset_events
            if e.asset_key == mart and e.partition == day.isoformat()]
    assert isinstance(again, dg.SkipReason)  # left to the queued run, not asked later either

    # what the queued run would have done: the day absorbs its late order and reconciles
    run = built.job("daily_marts").execute_in_process(
        instance=built.instance, tags=tags, asset_selection=[mart])
    assert run.success and _revenue_check(built, rec).passed


def test_late_rows_of_a_day_never_reconciled_are_said_as_such(built, rec) -> None:
    """A day built after it closed, never reconciled, that late rows touched since: the check
    warned "late rows landed after their reconciliation" (round 50, live); it says the day was
    not reconciled yet and the rows landed after it closed."""
    day = built.built_days[-4]
    pair_day = ("daily_store_revenue", day)
    assert _revenue_check(built, rec).passed
    built.sql("delete from tidemark.reconciled_days where pair = %s and day = %s", pair_day)
    _late_order(built, datetime.combine(day, time(20), tzinfo=UTC), store=3, amount=4.00)
    pending = _revenue_check(built, rec)
    assert not pending.passed and pending.severity == dg.AssetCheckSeverity.WARN
    assert "after their reconciliation" not in pending.description, pending.description
    assert (f"1 day(s) not reconciled yet differ by late rows landed after they closed "
            f"({day.isoformat()}: ") in pending.description, pending.description
    mart = dg.AssetKey(["marts", "fct_daily_store_revenue"])
    from orchestration.defs.dbt.partitions import range_tags

    run = built.job("daily_marts").execute_in_process(
        instance=built.instance, tags=range_tags(day.isoformat(), day.isoformat()),
        asset_selection=[mart])
    assert run.success and _revenue_check(built, rec).passed


def test_a_day_a_closure_run_builds_is_not_asked_again(built, rec) -> None:
    """A closure run (``closed_days_sensor``) waiting in the queue behind corrections on a
    loaded machine, or running: the correction sensor did not count it, and asked a correction
    of the same partition for the day's late rows (a duplicate run). It is left to that run,
    and not marked requested; once the closure run built it, the day waits for the
    reconciliation that follows (not asked again before it), which finds it reconciled."""
    from orchestration.defs.dbt.partitions import range_tags

    day = built.built_days[-4]
    mart = dg.AssetKey(["marts", "fct_daily_store_revenue"])
    assert _revenue_check(built, rec).passed
    _late_order(built, datetime.combine(day, time(21), tzinfo=UTC), store=4, amount=3.00)
    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    tags = {**range_tags(day.isoformat(), day.isoformat()), "tidemark/reason": "days closed"}
    for status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED):
        run = dg.DagsterRun(job_name="daily_marts", run_id=str(uuid.uuid4()), status=status,
                            tags=tags, asset_selection=frozenset({mart}))
        built.instance.add_run(run)
        try:
            result = rec.reconciliation_corrections(context)
        finally:
            built.instance.delete_run(run.run_id)
        asked = [] if isinstance(result, dg.SkipReason) else [
            r for r in result.run_requests if r.asset_selection == [mart]]
        assert asked == [], (status, [r.tags for r in asked])
    assert built.sql("select correction_requested_at from tidemark.reconciled_days where"
                     " mart = %s and day = %s", (mart.path[-1], day)) == [(None,)]

    closure = built.job("daily_marts").execute_in_process(
        instance=built.instance, tags=tags, asset_selection=[mart])
    assert closure.success
    after = rec.reconciliation_corrections(context)  # before reconcile_after_batch's run
    assert isinstance(after, dg.SkipReason) or not [
        r for r in after.run_requests if r.asset_selection == [mart]], after
    assert _revenue_check(built, rec).passed  # the closure run absorbed the late order


def _late_order(built, placed: datetime, store: int, amount: float) -> None:
    """A new order placed at ``placed`` (a closed day) lands now: late data."""
    with psycopg.connect(built.source_url, autocommit=True) as conn:
        conn.execute("insert into public.orders (order_id, store_id, customer_id, status,"
                     " placed_at, updated_at, total_amount) select max(order_id) + 1, %s,"
                     " min(customer_id), 'placed', %s, now(), %s from public.orders",
                     (store, placed, amount))
    built.catch_up()


@contextmanager
def _queued_run(built, job_name: str, tags: dict[str, str]) -> Iterator[None]:
    """A run of ``job_name`` that has not started yet. (A QUEUED run needs the code location's
    origin, which runs executed in process do not have; the sensors treat NOT_STARTED, a run
    created but not yet launched, like QUEUED.)"""
    run = dg.DagsterRun(job_name=job_name, run_id=str(uuid.uuid4()),
                        status=dg.DagsterRunStatus.NOT_STARTED, tags=tags)
    built.instance.add_run(run)
    try:
        yield
    finally:
        built.instance.delete_run(run.run_id)


def _revenue_check(built, rec):
    key = _key(rec, "daily_store_revenue")
    return check_results(built.run_checks([key]))[
        ("marts/fct_daily_store_revenue", "reconcile_daily_store_revenue")]


def test_only_days_closed_by_the_watermarks_are_reconciled(built, rec) -> None:
    """Hold the orders watermark inside the last seeded day but one: that day and the next are
    open, so reconciliation stops the day before."""
    days = built.built_days
    held = datetime.combine(days[-2], time(12), tzinfo=UTC)
    saved = built.sql("select watermark, last_change_at from tidemark.watermarks where"
                      " table_name = 'orders'")
    # last_change_at in the future: the table is not idle, the source's progress cannot advance it
    built.sql("insert into tidemark.watermarks (source, table_name, event_column,"
              " allowed_lateness, watermark, last_change_at) values ('shop', 'orders',"
              " 'placed_at', '2 hours', %s, now() + interval '1 day') on conflict (source,"
              " table_name) do update set watermark = excluded.watermark, last_change_at ="
              " excluded.last_change_at", (held,))
    try:
        partial = _revenue_check(built, rec)
        compared = [r.data["day"] for r in partial.metadata["days"].value.records]
        assert compared and compared[-1] == (days[-2] - timedelta(days=1)).isoformat()
    finally:
        if saved:
            built.sql("update tidemark.watermarks set watermark = %s, last_change_at = %s"
                      " where table_name = 'orders'", saved[0])
        else:
            built.sql("delete from tidemark.watermarks where table_name = 'orders'")
    full = _revenue_check(built, rec)
    assert [r.data["day"] for r in full.metadata["days"].value.records][-1] \
        == days[-1].isoformat()


def test_late_event_after_closure_is_recorded_and_corrected(built, rec) -> None:
    """An order for a closed, reconciled day lands: recorded as late, the live view has it,
    serving stops saying ``final`` for that day at once; a reconciliation before the correction
    warns (correction pending) instead of failing; the correction sensor re-runs just that mart
    day once, reconciliation passes, serving says ``corrected``."""
    from orchestration.defs.dbt.project import manifest_path
    from tidemark.reconciliation.finality import mart_event_tables
    from tidemark.reconciliation.serving import deploy_serving

    pair = next(p for p in rec.load_pairs() if p.name == "daily_store_revenue")
    assert _revenue_check(built, rec).passed
    deploy_serving(built.landing_url, pair, mart_event_tables(manifest_path())[pair.mart])
    day = built.built_days[-3]  # not the day the drift test corrected (served 'corrected')
    assert set(built.sql("select status from serving.daily_store_revenue where order_date = %s",
                         (day,))) == {("final",)}
    _late_order(built, datetime.combine(day, time(18), tzinfo=UTC), store=1, amount=12.34)
    late = built.sql("select late_rows, worst_lateness from tidemark.late_events where"
                     " table_name = 'orders' and day = %s", (day,))
    assert late and late[0][0] == 1 and late[0][1] > timedelta(hours=2)
    assert set(built.sql("select status from serving.daily_store_revenue where order_date = %s",
                         (day,))) == {("provisional",)}, "a day late rows touched is not final"

    context = dg.build_sensor_context(instance=built.instance,
                                      resources={"tidemark": built.resource})
    result = rec.reconciliation_corrections(context)
    late_runs = [r for r in result.run_requests if r.tags.get("tidemark/reason") == "late data"]
    assert len(late_runs) == 1
    request = late_runs[0]
    assert request.asset_selection == [dg.AssetKey(["marts", "fct_daily_store_revenue"])]
    assert request.partition_key_range == dg.PartitionKeyRange(day.isoformat(), day.isoformat())
    assert request.tags["tidemark/correction"] == "fct_daily_store_revenue"  # one run slot
    absorbed = [e for e in result.asset_events if e.partition == day.isoformat()]
    assert absorbed and absorbed[0].metadata["late_rows_absorbed"].value == 1
    assert isinstance(rec.reconciliation_corrections(context), dg.SkipReason)  # asked once

    # Reconciled before the correction ran: the day differs by the late order, which explains
    # it — a warning, correction pending, not an error; still provisional; nothing asked again.
    pending = _revenue_check(built, rec)
    assert not pending.passed and pending.severity == dg.AssetCheckSeverity.WARN
    assert "correction pending" in pending.description and day.isoformat() in pending.description
    assert pending.metadata["late_days"].value == {day.isoformat(): 1}
    per_day = {r.data["day"]: r.data for r in pending.metadata["days"].value.records}
    assert per_day[day.isoformat()]["status"] == "late: correction pending"
    assert per_day[day.isoformat()]["gross_revenue_difference"] == pytest.approx(12.34)
    assert set(built.sql("select status from serving.daily_store_revenue where order_date = %s",
                         (day,))) == {("provisional",)}
    assert isinstance(rec.reconciliation_corrections(context), dg.SkipReason)

    correction = built.job("daily_marts").execute_in_process(
        instance=built.instance, tags=request.tags, asset_selection=request.asset_selection)
    assert correction.success
    assert _revenue_check(built, rec).passed
    statuses = set(built.sql("select status from serving.daily_store_revenue where order_date"
                             " = %s", (day,)))
    assert statuses == {("corrected",)}


def test_at_one_utc_yesterday_is_not_reconciled(built, rec) -> None:
    """At 01:00 UTC (``today`` given to the reconciliation, the watermark where it would be then:
    the latest order at 00:55 minus 2 h of allowed lateness) yesterday is still open: the
    reconciliation stops the day before, and yesterday is not recorded as checked."""
    from orchestration.defs.reconciliation.checks import reconcile_pairs

    today = datetime.now(UTC).date()
    one_am = datetime.combine(today, time(1), tzinfo=UTC)
    held = one_am - timedelta(minutes=5) - timedelta(hours=2)
    saved = built.sql("select watermark, last_change_at from tidemark.watermarks where"
                      " table_name = 'orders'")
    before = set(built.sql("select day, checked_at from tidemark.reconciled_days where pair ="
                           " 'daily_store_revenue' and day >= %s", (today - timedelta(days=1),)))
    built.sql("update tidemark.watermarks set watermark = %s, last_change_at = now() +"
              " interval '1 day' where table_name = 'orders'", (held,))
    try:
        (revenue,) = reconcile_pairs(built.resource, ["daily_store_revenue"], today=one_am)
    finally:
        built.sql("update tidemark.watermarks set watermark = %s, last_change_at = %s"
                  " where table_name = 'orders'", saved[0])
    assert revenue.days and revenue.days[-1].day == today - timedelta(days=2)
    assert all(d.reconciled for d in revenue.days)
    assert set(built.sql("select day, checked_at from tidemark.reconciled_days where pair ="
                         " 'daily_store_revenue' and day >= %s",
                         (today - timedelta(days=1),))) == before
