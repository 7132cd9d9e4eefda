"""One SQLAlchemy engine per SQLite file while ``tidemark up`` executes a Dagster run.

Dagster's SQLite event log (``SqliteEventLogStorage``, the storage of ``$TIDEMARK_HOME/dagster``)
creates a new SQLAlchemy engine for every connection it opens, and an engine's compiled-statement
cache lives and dies with it: each event of a run (some 770 in the first build — the planned
materialisations and checks, each step's outputs, every dbt model and test) paid an engine and
a full compile of its INSERT, for the run's shard and again for the index shard. That was ~25 %
of the CPU of the ``tidemark up`` process during its first build (py-spy), and 3-12 s before the
build's first step started (the ~220 planned events).

:func:`shared_engines` hands the storage one engine per database file for the duration of a
block (the in-process runs of :mod:`tidemark.stack.build`): its statements compile once. The
storage still opens and closes a connection per use (the engines keep ``NullPool``) and still
disposes the engine after each, which only empties that pool: what reaches the files is the same.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_ENGINES: dict[str, Any] = {}
_STATE: dict[str, Any] = {"depth": 0, "original": None}


def _create_engine(url: Any, **options: Any) -> Any:
    """``sqlalchemy.create_engine``, once per (URL, options) while a block is open."""
    import sqlalchemy

    key = f"{url} {sorted(options.items(), key=lambda item: item[0])!r}"
    with _LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = sqlalchemy.create_engine(url, **options)
        return _ENGINES[key]


@contextmanager
def shared_engines() -> Iterator[dict[str, Any]]:
    """For the block, the SQLite event log storage gets one engine per (URL, options).

    Blocks may nest or overlap (two threads' runs): the storage gets its own ``create_engine``
    back, and the engines are disposed, when the last one ends.

    Yields:
        The engines created so far, by URL and options (for tests).
    """
    from dagster._core.storage.event_log.sqlite import sqlite_event_log

    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["original"] = sqlite_event_log.create_engine
            sqlite_event_log.create_engine = _create_engine
        _STATE["depth"] += 1
    try:
        yield _ENGINES
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                sqlite_event_log.create_engine = _STATE["original"]
                engines = list(_ENGINES.values())
                _ENGINES.clear()
            else:
                engines = []
        for engine in engines:
            engine.dispose()
