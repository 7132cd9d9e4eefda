"""Dagster's SQLite storage with one SQLAlchemy engine per file, for every Dagster process.

Dagster 1.13's SQLite storages (the event log, the runs and the schedules of
``$TIDEMARK_HOME/dagster/storage``) create a new SQLAlchemy engine each time they open a
connection, and an engine's compiled-statement cache lives and dies with it: every event a run
stores paid an engine and a full compile of its INSERT, for the run's file and again for the
index file (some 35 % of a run process's CPU, py-spy), and every poll of the daemon and the UI
compiled its SELECT again.

The ``dagster.yaml`` that ``tidemark up`` writes names :class:`SharedEngineSqliteStorage` as its
``storage`` (Dagster's ``custom`` storage form), so the webserver, the daemon, the code servers,
the run workers they launch (their instance is rebuilt from the instance's reference, which
names the class) and ``tidemark up``'s own runs all use it. It is Dagster's SQLite storage with
the same files in the same places; each part keeps one engine per database file, so a statement
compiles once per process and file. The engines keep Dagster's ``NullPool``: every use still
opens its own SQLite connection and closes it after, so nothing is shared between threads or
processes, and the event log still serialises its connections with its lock.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

RUN_FILE_ENGINES = 16
"""Run files whose engine the event log keeps, the most recently used (the index file's is
always kept): the UI reads the event logs of many runs, a run worker writes one."""


class SharedEngineEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log (a file per run and an index file), one engine per file."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        """Dagster's storage at ``base_dir``; the engines of run files are made when used."""
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._index_engine = create_engine(
            create_db_conn_string(os.path.abspath(base_dir), INDEX_SHARD_NAME),
            poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Any) -> SharedEngineEventLogStorage:
        """This class (Dagster's returns its own) from the ``base_dir`` of its config."""
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        """The engine of ``shard``'s file (called under ``self._db_lock``)."""
        if shard == INDEX_SHARD_NAME:
            return self._index_engine
        engine = self._engines.get(shard)
        if engine is None:
            engine = create_engine(self.conn_string_for_shard(shard), poolclass=NullPool,
                                   connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
            self._engines[shard] = engine
            if len(self._engines) > RUN_FILE_ENGINES:
                self._engines.popitem(last=False)[1].dispose()
        else:
            self._engines.move_to_end(shard)
        return engine

    def has_table(self, table_name: str) -> bool:
        """Whether the index file has ``table_name`` (asked at every asset event's store):
        through the index file's engine, without the lock (a caller may hold it)."""
        with self._index_engine.connect() as conn:
            return bool(self._index_engine.dialect.has_table(conn, table_name))

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        """Dagster's ``_connect`` (lock, first-use schema check, a transaction on a new
        connection) on the file's kept engine instead of a new one."""
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def dispose(self) -> None:
        """Stop the file watcher, as Dagster's does, and dispose of the engines."""
        super().dispose()
        with self._db_lock:
            engines = [*self._engines.values(), self._index_engine]
            self._engines.clear()
        for engine in engines:
            engine.dispose()


class _OneFileEngine:
    """``connect`` of a one-file SQLite storage (runs, schedules) through one engine."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        """Dagster's storage of ``conn_string`` and its engine."""
        super().__init__(conn_string, inst_data=inst_data)  # type: ignore[call-arg]
        self._engine = create_engine(conn_string, poolclass=NullPool)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Any) -> Any:
        """This class (Dagster's returns its own) from the ``base_dir`` of its config."""
        return cls.from_local(inst_data=inst_data, **config_value)  # type: ignore[attr-defined]

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A transaction on a new connection of the storage's engine."""
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        """Dispose of the engine (it stays usable)."""
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()


class SharedEngineRunStorage(_OneFileEngine, SqliteRunStorage):
    """Dagster's SQLite run storage (``runs.db``) through one engine."""


class SharedEngineScheduleStorage(_OneFileEngine, SqliteScheduleStorage):
    """Dagster's SQLite schedule storage (``schedules.db``) through one engine."""


class SharedEngineSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (``storage: sqlite:``) whose parts keep one engine per file.

    Same ``base_dir`` and same files: runs in ``history/runs.db``, event logs in
    ``history/runs/<run>.db`` and ``index.db``, schedules and sensors in
    ``schedules/schedules.db``.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        """The three storages under ``base_dir``, as Dagster's ``DagsterSqliteStorage``."""
        self.base_dir = base_dir
        self._run_storage = SharedEngineRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = SharedEngineEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SharedEngineScheduleStorage.from_local(
            _schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Any) -> SharedEngineSqliteStorage:
        """This class (Dagster's returns its own) from the ``base_dir`` of its config."""
        return cls.from_local(inst_data=inst_data, **config_value)
