"""Run retention on Tidemark's own daily marts: a correction run superseded by a later one goes,
the runs holding each day's latest materialization and each mart check's latest evaluation
stay, and what Dagster reads back per partition is unchanged (an instance of its own in a
``tidemark up`` home, so the session's instance keeps its runs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

MARTS = [dg.AssetKey(["marts", "fct_daily_store_revenue"]),
         dg.AssetKey(["marts", "fct_daily_store_cancellation_rate"])]


def _read_back(instance: dg.DagsterInstance) -> dict:
    """Per mart: materialized partitions, each one's latest materialization (run, storage
    id), and the latest execution (run, status) of every check of the marts."""
    out: dict = {}
    for key in MARTS:
        parts = sorted(instance.get_materialized_partitions(key))
        out[key.to_user_string()] = {p: (r.run_id, r.storage_id) for p in parts for r in
                                     instance.fetch_materializations(dg.AssetRecordsFilter(
                                         asset_key=key, asset_partitions=[p]),
                                         limit=1).records}
    storage = instance.event_log_storage
    with storage.index_connection() as conn:
        from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable as t

        checks = {(r.asset_key, r.check_name) for r in conn.execute(
            t.select().where(t.c.asset_key.in_([k.to_string() for k in MARTS])))}
    keys = [dg.AssetCheckKey(dg.AssetKey.from_db_string(a), c) for a, c in checks]
    latest = storage.get_latest_asset_check_execution_by_key(keys)
    out["checks"] = {k.to_user_string(): (r.run_id, r.status.value) for k, r in latest.items()}
    return out


def test_superseded_corrections_go_and_the_marts_partitions_read_back_unchanged(
        built, tmp_path) -> None:
    from orchestration.defs.dbt.partitions import range_tags
    from tidemark.settings import Settings
    from tidemark.stack.dagster_proc import dagster_home
    from tidemark.stack.dagster_retention import prune_runs

    first, last = built.built_days[-2].isoformat(), built.built_days[-1].isoformat()
    home = dagster_home(Settings(home=tmp_path, port=55432))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        job = built.job("daily_marts")
        both = job.execute_in_process(instance=instance, tags=range_tags(first, last)).run_id
        superseded = job.execute_in_process(instance=instance,
                                            tags=range_tags(last, last)).run_id
        latest = job.execute_in_process(instance=instance, tags=range_tags(last, last)).run_id
        before = _read_back(instance)
        assert sorted(before[MARTS[0].to_user_string()]) == [first, last]
        assert before["checks"]

        plan = prune_runs(instance, timedelta(days=7), now=datetime.now(UTC)
                          + timedelta(days=8), keep_per_job=1)

        assert _read_back(instance) == before
        assert [r.run_id for r in plan.delete] == [superseded], plan.kept
        assert {r.run_id for r in instance.get_runs()} == {both, latest}
        assert plan.kept[both].startswith("latest materialization")
