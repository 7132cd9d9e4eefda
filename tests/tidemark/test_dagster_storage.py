"""Dagster's SQLite storage with one engine per file, as the ``dagster.yaml`` of ``tidemark up``
names it for every Dagster process (real Dagster storage, real runs)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events.log import EventLogEntry
from dagster._serdes import deserialize_value, serialize_value
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from tidemark.settings import Settings
from tidemark.stack import dagster_storage
from tidemark.stack.dagster_proc import SQLITE_STORAGE, STORAGE_HEAD, dagster_home
from tidemark.stack.dagster_storage import (
    RUN_FILE_ENGINES,
    SharedEngineEventLogStorage,
    SharedEngineRunStorage,
    SharedEngineScheduleStorage,
)


@dg.asset
def one() -> None:
    """An asset with no value."""


@dg.asset(deps=[one])
def two() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"after": "one"})


@dg.asset_check(asset=two)
def two_is_two() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


JOB = dg.Definitions(assets=[one, two],
                     asset_checks=[two_is_two]).get_implicit_global_asset_job_def()


def _home(tmp_path: Path) -> Path:
    return dagster_home(Settings(home=tmp_path, port=55432))


@contextmanager
def _engines_used() -> Iterator[dict[str, set[int]]]:
    """The engines that open connections during the block, by database file."""
    used: dict[str, set[int]] = {}

    def record(conn) -> None:
        used.setdefault(Path(str(conn.engine.url.database)).name, set()).add(id(conn.engine))

    event.listen(Engine, "engine_connect", record)
    try:
        yield used
    finally:
        event.remove(Engine, "engine_connect", record)


def test_a_run_on_the_written_instance_uses_one_engine_per_file(tmp_path: Path) -> None:
    # Dagster's own SQLite storage (main) made an engine per connection: some 60 for the index
    # file and 30 for the run's file in this 2-asset run.
    with dg.DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        with _engines_used() as used:
            result = JOB.execute_in_process(instance=instance)
        assert result.success
        run_file = f"{result.run_id}.db"
        assert set(used) == {"runs.db", "index.db", run_file}
        assert {name: len(ids) for name, ids in used.items()} == {
            "runs.db": 1, "index.db": 1, run_file: 1}
        assert len(instance.get_records_for_run(result.run_id).records) > 10
        assert instance.get_latest_materialization_event(dg.AssetKey("two")) is not None


def test_a_run_worker_rebuilds_the_same_storage_from_the_instance_ref(tmp_path: Path) -> None:
    # The daemon and the UI hand their instance's reference to each run worker they launch
    # (`dagster api execute_run`), which builds its instance from it.
    with dg.DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        ref = deserialize_value(serialize_value(instance.get_ref()))
    with dg.DagsterInstance.from_ref(ref) as worker:
        assert isinstance(worker.event_log_storage, SharedEngineEventLogStorage)
        assert isinstance(worker.run_storage, SharedEngineRunStorage)
        assert isinstance(worker.schedule_storage, SharedEngineScheduleStorage)
        assert worker.event_log_storage._base_dir == str(tmp_path / "dagster/storage/history/runs")


def test_an_earlier_home_keeps_its_runs_and_dagsters_own_storage_reads_ours(tmp_path: Path) -> None:
    # A home an earlier `tidemark up` wrote (Dagster's own class) gets today's text and keeps
    # its runs; what today's storage writes, Dagster's own reads back (the same files).
    home = _home(tmp_path)
    today = (home / "dagster.yaml").read_text()
    head, rest = today.split(STORAGE_HEAD, 1)
    storage, tail = rest.split("\n", 1)
    earlier = head + SQLITE_STORAGE.format(storage=storage) + tail
    (home / "dagster.yaml").write_text(earlier)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        before = JOB.execute_in_process(instance=instance).run_id
    assert _home(tmp_path) == home and (home / "dagster.yaml").read_text() == today
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, SharedEngineEventLogStorage)
        assert instance.get_run_by_id(before) is not None
        after = JOB.execute_in_process(instance=instance).run_id
        events = len(instance.get_records_for_run(after).records)
    (home / "dagster.yaml").write_text(earlier)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert {r.run_id for r in instance.get_runs()} == {before, after}
        assert len(instance.get_records_for_run(after).records) == events
        assert instance.get_latest_materialization_event(dg.AssetKey("two")).run_id == after
        check = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("two"), "two_is_two"), limit=1)
        assert check[0].run_id == after


def _entry(run_id: str, n: int) -> EventLogEntry:
    return EventLogEntry(error_info=None, level="INFO", user_message=f"event {n}",
                         run_id=run_id, timestamp=float(n))


def test_each_use_is_its_own_connection_and_threads_store_side_by_side(tmp_path: Path) -> None:
    storage = SharedEngineEventLogStorage(str(tmp_path / "runs"))
    try:
        connections = []
        for _ in range(2):
            with storage.run_connection("r") as conn:
                connections.append(conn.connection.dbapi_connection)
                assert isinstance(conn.engine.pool, NullPool)
        assert connections[0] is not connections[1]  # NullPool: nothing kept between uses
        errors: list[BaseException] = []

        def store(run_id: str) -> None:
            try:
                for n in range(20):
                    storage.store_event(_entry(run_id, n))
                    storage.store_event(_entry("shared", n))
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=store, args=(f"t{i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert [len(storage.get_records_for_run(f"t{i}").records) for i in range(3)] == [20] * 3
        assert len(storage.get_records_for_run("shared").records) == 60
    finally:
        storage.dispose()


def test_the_event_log_keeps_the_engines_of_the_recent_run_files_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert RUN_FILE_ENGINES == 16
    monkeypatch.setattr(dagster_storage, "RUN_FILE_ENGINES", 3)  # 3 files instead of 16 to fill
    storage = SharedEngineEventLogStorage(str(tmp_path / "runs"))
    try:
        for n in range(5):
            storage.store_event(_entry(f"run{n}", n))
        assert list(storage._engines) == ["run2", "run3", "run4"]
        assert len(storage.get_records_for_run("run0").records) == 1  # its file is still read
        assert list(storage._engines)[-1] == "run0"
    finally:
        storage.dispose()


@pytest.mark.parametrize("name", ["SharedEngineRunStorage", "SharedEngineScheduleStorage"])
def test_run_and_schedule_storage_connect_through_one_engine(tmp_path: Path, name: str) -> None:
    cls = {"SharedEngineRunStorage": SharedEngineRunStorage,
           "SharedEngineScheduleStorage": SharedEngineScheduleStorage}[name]
    storage = cls.from_local(str(tmp_path))
    with _engines_used() as used:
        for _ in range(3):
            with storage.connect() as conn:
                assert isinstance(conn.engine.pool, NullPool)
    assert [len(ids) for ids in used.values()] == [1]
    storage.dispose()
