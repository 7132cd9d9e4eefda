"""Push each committed change of a live view, like Materialize's SUBSCRIBE.

Every transaction that changes a view advances the view's counter in ``tidemark.live_changes``
when it commits (:mod:`streaming_views.runtime`; maintenance sends no NOTIFY, so writers can
use PREPARE TRANSACTION). The subscriber polls that counter (one index lookup every
``poll_s``), and when it moved reads the view and emits the difference from what it read
before: ``(timestamp, diff, row)`` with ``diff`` +n / -n as in SUBSCRIBE. The first read is
emitted as a snapshot of +1 rows. Changes committed close together may arrive as one batch.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from streaming_views.catalog import read_catalog
from streaming_views.compiler import LIVE_SCHEMA
from streaming_views.errors import ViewNotFoundError

POLL_S = 0.1


@dataclass(frozen=True)
class Change:
    """One change of a view: at ``timestamp``, ``row`` was added (diff > 0) or removed."""

    timestamp: datetime
    diff: int
    row: tuple[Any, ...]


def _read(conn: psycopg.Connection, name: str) -> tuple[datetime, Counter]:
    with conn.transaction():
        conn.execute("set transaction isolation level repeatable read")
        ts = conn.execute("select now()").fetchone()[0]
        rows = conn.execute(sql.SQL("select * from {}").format(
            sql.Identifier(LIVE_SCHEMA, name))).fetchall()
    return ts, Counter(tuple(_hashable(v) for v in row) for row in rows)


def _hashable(value: Any) -> Any:
    """jsonb objects and arrays come back as dict/list: make them hashable (as JSON text)."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def diff(before: Counter, after: Counter, timestamp: datetime) -> list[Change]:
    """The changes turning ``before`` into ``after`` (removals first), sorted by row."""
    out = []
    for row in sorted(set(before) | set(after), key=repr):
        delta = after[row] - before[row]
        if delta:
            out.append(Change(timestamp, delta, row))
    return sorted(out, key=lambda c: c.diff)


def _seq(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("select seq from tidemark.live_changes where name = %s",
                       (name,)).fetchone()
    return int(row[0]) if row else -1


def subscribe(dsn: str, name: str, *, snapshot: bool = True, timeout_s: float | None = None,
              stop: threading.Event | None = None, poll_s: float = POLL_S) -> Iterator[Change]:
    """Yield the changes of ``live.<name>`` as they are committed.

    Args:
        dsn: the landing database.
        name: the view.
        snapshot: first yield the current rows as +1 changes.
        timeout_s: stop after this many seconds without a change (None: never).
        stop: set it to stop (checked every ``poll_s``).
        poll_s: how often the view's change counter is read.

    Raises:
        ViewNotFoundError: the view is not deployed.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not read_catalog(conn, target="embedded", name=name):
            raise ViewNotFoundError(f"live view {name!r} is not deployed; see "
                                    f"'tidemark views list'.")
        seq = _seq(conn, name)
        ts, current = _read(conn, name)
        if snapshot:
            yield from diff(Counter(), current, ts)
        idle = 0.0
        while stop is None or not stop.is_set():
            now = _seq(conn, name)
            if now == seq:
                time.sleep(poll_s)
                idle += poll_s
                if timeout_s is not None and idle >= timeout_s:
                    return
                continue
            idle, seq = 0.0, now
            ts, new = _read(conn, name)
            yield from diff(current, new, ts)
            current = new
