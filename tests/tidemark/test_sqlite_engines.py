"""One SQLite engine per file while ``tidemark up`` executes a run (real Dagster storage)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy
from dagster._core.storage.event_log.sqlite import sqlite_event_log

from tidemark.stack.sqlite_engines import shared_engines


@dg.asset
def one() -> int:
    return 1


@dg.asset
def two(one: int) -> int:
    return one + 1


def _instance(home: Path) -> dg.DagsterInstance:
    (home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {home / 'storage'}\n")
    return dg.DagsterInstance.from_config(str(home))


def test_a_run_stores_its_events_through_one_engine_per_file(tmp_path: Path) -> None:
    instance = _instance(tmp_path)
    job = dg.Definitions(assets=[one, two]).get_implicit_global_asset_job_def()
    try:
        with shared_engines() as engines:
            result = job.execute_in_process(instance=instance)
            # the run's shard and the index shard: one engine each, for every event of the run
            assert 1 <= len(engines) <= 2
        assert result.success
        assert engines == {}  # disposed and forgotten at the end of the block
        records = instance.get_records_for_run(result.run_id).records
        assert len(records) > 10
        assert instance.get_latest_materialization_event(dg.AssetKey("two")) is not None
    finally:
        instance.dispose()
    assert sqlite_event_log.create_engine is sqlalchemy.create_engine  # restored


def test_the_storage_creates_its_engines_again_after_the_block(tmp_path: Path) -> None:
    instance = _instance(tmp_path)
    job = dg.Definitions(assets=[one, two]).get_implicit_global_asset_job_def()
    try:
        with shared_engines():
            pass
        assert job.execute_in_process(instance=instance).success
    finally:
        instance.dispose()


def test_nested_blocks_restore_the_storage_once_the_last_ends() -> None:
    with shared_engines():
        with shared_engines():
            pass
        assert sqlite_event_log.create_engine is not sqlalchemy.create_engine  # outer still open
    assert sqlite_event_log.create_engine is sqlalchemy.create_engine
