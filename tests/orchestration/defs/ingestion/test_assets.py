"""Ingestion assets: observation (LSN as data version), change-only events, lag and dead-letter
checks, and the catch-up / replay / resync jobs — against the real landed stack."""

from __future__ import annotations

import json
import time

import dagster as dg
import psycopg
from psycopg import sql

from orchestration.defs.ingestion.assets import states
from orchestration.defs.ingestion.checks import DEAD_LETTER_CHECK, LAG_CHECK
from orchestration.defs.ingestion.sensors import dead_letter_growth, observe_changes
from orchestration.defs.keys import table_key
from tests.orchestration.defs.conftest import check_results


def _changelog_lsn(orch, table: str) -> str:
    return orch.sql(sql.SQL("select max(_commit_lsn)::text from {}").format(
        sql.Identifier("cdc", f"shop__{table}")).as_string(None))[0][0]


def test_observation_records_the_applied_lsn(orch) -> None:
    result = orch.run_assets(lambda k: k.path[0] == "shop")
    assert result.success
    observations = {e.asset_key.to_user_string(): e for e in
                    (ev.event_specific_data.asset_observation for ev in
                     result.get_asset_observation_events())}
    assert set(observations) >= {"shop/orders", "shop/payments", "shop/app_events"}
    orders = observations["shop/orders"]
    assert orders.metadata["applied_lsn"].value == _changelog_lsn(orch, "orders")
    assert "dagster/data_version" not in orders.tags  # live views are never "Upstream data"
    meta = orders.metadata
    assert meta["paused"].value is False
    assert {"lag_seconds", "lag_bytes", "rows_per_s", "dead_letters"} <= set(meta)


def _observed(cursor: str) -> dict[str, tuple]:
    """Per table, the observed LSN and when it was recorded (the cursor's observation part)."""
    return {name: (entry[0], entry[3]) for name, entry in json.loads(cursor).items()}


def test_observer_records_only_changes(orch) -> None:
    events, cursor = observe_changes(orch.resource, None)
    observed = {e.asset_key.path[-1] for e in events if isinstance(e, dg.AssetObservation)}
    assert len(observed) == 8  # every table once at the start
    again, cursor2 = observe_changes(orch.resource, cursor)
    assert again == [] and cursor2 == cursor  # nothing moved: nothing recorded
    with psycopg.connect(orch.source_url, autocommit=True) as conn:
        conn.execute("update public.stores set store_name = store_name || '' "
                     "where store_id = 1")
    orch.catch_up()
    # within RECORD_EVERY_S of the last observation a moved LSN waits (a table under load
    # moved every 30 s: an observation of every table every 30 s, ~290 MB/day of event log)
    # (The watermark_delay outcome may change meanwhile, on its own: the update is a source
    # commit, and a table that landed nothing for the idle period, orders once the session ran
    # that long, then has its watermark advanced by it.)
    soon, cursor3 = observe_changes(orch.resource, cursor, now=time.time() + 60)
    assert not [e for e in soon if isinstance(e, dg.AssetObservation)], soon
    assert _observed(cursor3) == _observed(cursor)
    moved, _ = observe_changes(orch.resource, cursor, now=time.time() + 301)
    assert [e.asset_key.path[-1] for e in moved if isinstance(e, dg.AssetObservation)] \
        == ["stores"]


def test_lag_check_fails_when_ingestion_stops_and_passes_after_catch_up(orch) -> None:
    from orchestration.defs.resources import TidemarkResource

    resource = TidemarkResource(source_url=orch.source_url, source_ingest_url=orch.source_url,
                                landing_url=orch.landing_url, landing_app_url=orch.landing_url,
                                lag_warn_s=0.5, lag_error_s=1.0)
    defs_keys = [dg.AssetCheckKey(table_key("shop", "orders"), LAG_CHECK)]
    with psycopg.connect(orch.source_url, autocommit=True) as conn:
        conn.execute("update public.orders set updated_at = clock_timestamp() where order_id = "
                     "(select max(order_id) from public.orders)")
    time.sleep(1.5)  # the change waits; nothing lands it
    state = states(resource, [table_key("shop", "orders")])[table_key("shop", "orders")]
    assert state.pending_s >= 1.0
    from orchestration.definitions import build_defs

    defs = build_defs(resource)
    job = defs.get_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=set(defs_keys))
    failed = check_results(job.execute_in_process(instance=orch.instance))
    evaluation = failed[("shop/orders", LAG_CHECK)]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "lags" in evaluation.description and "ingest run" in evaluation.description
    assert evaluation.metadata["pending_seconds"].value >= 1.0

    catch_up = orch.job("ingestion_catch_up").execute_in_process(instance=orch.instance)
    assert catch_up.success
    assert catch_up.get_asset_observation_events()  # the job records the new LSNs
    passed = check_results(job.execute_in_process(instance=orch.instance))
    assert passed[("shop/orders", LAG_CHECK)].passed


def test_dead_letters_check_and_growth_alert(orch) -> None:
    dead = orch.sql("select table_name, count(*) from tidemark.dead_letters "
                    "where replayed_at is null group by 1")
    counts = dict(dead)
    assert counts.get("app_events", 0) > 0  # the seed writes malformed events
    result = orch.run_checks([dg.AssetCheckKey(table_key("shop", "app_events"), DEAD_LETTER_CHECK)])
    evaluation = check_results(result)[("shop/app_events", DEAD_LETTER_CHECK)]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["dead_letters"].value == counts["app_events"]

    _, cursor = dead_letter_growth(orch.resource, None)
    assert dead_letter_growth(orch.resource, cursor)[0] == []
    with psycopg.connect(orch.source_url, autocommit=True) as conn:
        conn.execute(
            "insert into public.app_events (event_id, event_type, event_time, received_at,"
            " customer_id, session_id, payload) select gen_random_uuid(), 'cart_item_added',"
            " now(), now(), customer_id, gen_random_uuid(), '{\"quantity\": \"three\"}'"
            " from public.customers limit 1")
    orch.catch_up()
    assert dead_letter_growth(orch.resource, cursor, now=time.time() + 60)[0] == []  # waits
    grown, _ = dead_letter_growth(orch.resource, cursor, now=time.time() + 301)
    assert [(e.asset_key.path[-1], e.metadata["new_since_last_check"].value) for e in grown] \
        == [("app_events", 1)]


def test_replay_and_resync_jobs_run(orch) -> None:
    replay = orch.job("dead_letter_replay").execute_in_process(
        instance=orch.instance, run_config={"ops": {"replay_dead_letters": {"config": {
            "table": "app_events"}}}})
    assert replay.success
    outcome = replay.output_for_node("replay_dead_letters")["shop"]
    assert sum(outcome.values()) > 0  # every letter was looked at (they still fail)
    # A table no dbt view reads (ingestion's resync drops and re-creates the mirror table, which
    # PostgreSQL refuses while dbt's staging views depend on it; reported to the ingestion part).
    with psycopg.connect(orch.source_url, autocommit=True) as conn:
        conn.execute("create table if not exists public.resync_probe (id integer primary key, "
                     "note text)")
        conn.execute("alter table public.resync_probe replica identity full")
        conn.execute("insert into public.resync_probe select g, 'n' || g "
                     "from generate_series(1, 25) g on conflict do nothing")
    orch.catch_up()
    assert orch.sql("select count(*) from shop.resync_probe")[0][0] == 25
    orch.sql("delete from shop.resync_probe where id <= 5")  # landing drifted from the source
    resync = orch.job("ingestion_resync").execute_in_process(
        instance=orch.instance, run_config={"ops": {"resync_table": {"config": {
            "table": "resync_probe"}}}})
    assert resync.success
    assert orch.sql("select count(*) from shop.resync_probe")[0][0] == 25
    refused = orch.job("ingestion_resync").execute_in_process(instance=orch.instance,
                                                              raise_on_error=False)
    assert not refused.success


def test_watermark_metadata_and_delay_check(orch) -> None:
    """Tables with an event-time column carry their watermark as a number (the UI plots it) and
    a ``watermark_delay`` check; tables without one (stores) have neither."""
    from orchestration.defs.ingestion.checks import WATERMARK_CHECK

    result = orch.run_assets(lambda k: k.path[0] == "shop")
    observations = {e.asset_key.path[-1]: e.metadata for e in
                    (ev.event_specific_data.asset_observation for ev in
                     result.get_asset_observation_events())}
    orders = observations["orders"]
    assert isinstance(orders["watermark_epoch_s"].value, float)
    assert orders["watermark_delay_s"].value >= 2 * 3600  # allowed lateness of orders: 2 h
    assert "watermark_epoch_s" not in observations["stores"]
    key = dg.AssetCheckKey(table_key("shop", "orders"), WATERMARK_CHECK)
    evaluation = check_results(orch.run_checks([key]))[("shop/orders", WATERMARK_CHECK)]
    assert evaluation.passed, evaluation.description
    assert "watermark" in evaluation.description


def test_catch_up_skips_contracts_of_a_source_not_registered(orch, tmp_path, monkeypatch) -> None:
    """Contracts left by ``tidemark source remove`` (here ``contracts/gone``) are reported, never
    caught up from the demo database: no slot ``tidemark_gone`` (it would hold WAL forever)."""
    import shutil

    import contracts.loader
    from contracts.loader import PACKAGE_ROOT

    root = tmp_path / "contracts"
    shutil.copytree(PACKAGE_ROOT / "shop", root / "shop")
    (root / "gone").mkdir()
    shutil.copy(PACKAGE_ROOT / "shop" / "stores.yml", root / "gone")
    monkeypatch.setattr(contracts.loader, "PACKAGE_ROOT", root)

    result = orch.job("ingestion_catch_up").execute_in_process(instance=orch.instance)
    assert result.success
    slots = [r[0] for r in orch.sql("select slot_name from pg_replication_slots")]
    assert "tidemark_gone" not in slots and "tidemark_shop" in slots
    logs = [r.dagster_event.message if r.dagster_event else r.user_message
            for r in orch.instance.all_logs(result.run_id)]
    assert any("caught up" in m for m in logs if m and m.startswith("shop:"))
    assert not any(m and m.startswith("gone:") for m in logs)
    warning = next(m for m in logs if m and "not registered" in m)
    assert str(root / "gone") in warning and "tidemark source add gone" in warning


def test_ingestible_sources_are_the_registered_ones_and_the_demo(orch) -> None:
    """Registered sources and the demo "shop" are caught up; other contracts are not."""
    from ingestion.sources import SourceSpec, delete_source, save_source
    from orchestration.defs.ingestion.state import ingestible_sources

    assert ingestible_sources(orch.resource, ["gone", "shop"]) == (["shop"], ["gone"])
    save_source(orch.landing_url, SourceSpec("gone", url=orch.source_url))
    try:
        assert ingestible_sources(orch.resource, ["gone", "shop"]) == (["gone", "shop"], [])
    finally:
        delete_source(orch.landing_url, "gone")


def test_tables_of_a_source_not_registered_are_not_read_and_their_checks_say_why(
        orch, tmp_path, monkeypatch) -> None:
    """Their state is not read from the demo database; their checks warn with what to do."""
    import shutil
    from types import SimpleNamespace

    import contracts.loader
    from contracts.loader import PACKAGE_ROOT
    from orchestration.defs.ingestion.checks import ingestion_checks
    from orchestration.defs.ingestion.state import table_specs

    root = tmp_path / "contracts"
    shutil.copytree(PACKAGE_ROOT / "shop", root / "shop")
    (root / "gone").mkdir()
    shutil.copy(PACKAGE_ROOT / "shop" / "stores.yml", root / "gone")
    monkeypatch.setattr(contracts.loader, "PACKAGE_ROOT", root)
    table_specs.cache_clear()
    try:
        read = states(orch.resource)
        assert table_key("shop", "stores") in read and table_key("gone", "stores") not in read
        selected = {dg.AssetCheckKey(table_key(s, "stores"), LAG_CHECK) for s in ("gone", "shop")}
        run = ingestion_checks.op.compute_fn.decorated_fn  # the check's own function
        results = {r.asset_key.path[0]: r for r in run(
            SimpleNamespace(selected_asset_check_keys=selected), orch.resource)}
    finally:
        table_specs.cache_clear()
    assert results["shop"].passed
    gone = results["gone"]
    assert not gone.passed and gone.severity == dg.AssetCheckSeverity.WARN
    assert "'gone' is not registered" in gone.description


def test_lag_check_metadata_says_busy_when_the_changelog_is_locked(orch) -> None:
    """A landing transaction holding the changelog (a schema change's backfill) leaves the
    table's applied LSN unread after ``READ_LOCK_WAIT`` (b38); the check said only "lags 0.0 s"
    and its metadata "applied_lsn: none", as if nothing had landed. It now carries the "busy"
    text in its metadata and description."""
    key = dg.AssetCheckKey(table_key("shop", "orders"), LAG_CHECK)
    with psycopg.connect(orch.landing_url) as holder:
        holder.execute("lock table cdc.shop__orders in access exclusive mode")
        try:
            evaluation = check_results(orch.run_checks([key]))[("shop/orders", LAG_CHECK)]
        finally:
            holder.rollback()
    busy = evaluation.metadata["busy"].value
    assert busy.startswith("busy: orders is locked by another landing session"), busy
    assert busy in evaluation.description
    evaluation = check_results(orch.run_checks([key]))[("shop/orders", LAG_CHECK)]
    assert "busy" not in evaluation.metadata
